//! The write as a plan node: each partition of [`WriteExec`]'s input is written by that
//! partition's task to its own file(s) in the staging folder, and the node emits one row per
//! file written (path, rows, bytes, CRC-32). Only the commit — the manifest and the rename or
//! upload — is left outside the plan, as one step at the end.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt32Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

use super::writer::{self, ParquetCompression, PartSpec};
use super::WrittenFile;
use crate::ledger::rejects::BooksRef;
use crate::services::Services;
use crate::storage::format::Format;

/// What a [`WriteExec`] writes: configuration only (the rejects and the progress counter
/// are found among the session's services by id).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WriteSpec {
    /// The staging folder.
    pub dir: PathBuf,
    /// The job id, part of every file name.
    pub job: String,
    /// One output file (named `part-00000-JOB`).
    pub single: bool,
    /// Schema of the incoming rows (partition columns included).
    #[serde(with = "crate::codec::schema_text")]
    pub schema: SchemaRef,
    /// Output format.
    pub format: Format,
    /// Parquet codec.
    pub compression: ParquetCompression,
    /// Hive partition columns.
    pub partition_by: Vec<String>,
    /// Where rows go that cannot be placed (a partition value too long for a folder name).
    pub books: Option<BooksRef>,
    /// The write progress counter's id among the session's services.
    pub progress: u64,
    /// An object-store output the task uploads each file it wrote to, under its final name
    /// (a cluster's job: see [`crate::sink::remote::RemoteTarget::upload_as`]), removing
    /// its local copy; `None`: the files stay in `dir`.
    #[serde(default)]
    pub upload: Option<String>,
}

impl WriteSpec {
    /// The file name partition `i` writes (in each partition folder).
    fn name(&self, i: usize) -> String {
        let i = if self.single { 0 } else { i };
        format!("part-{i:05}-{}.{}", self.job, self.format.extension())
    }
}

/// Writes every partition of its input; emits the files written.
#[derive(Debug)]
pub struct WriteExec {
    input: Arc<dyn ExecutionPlan>,
    /// The node's own id (its tasks' rejected rows are written and counted under it).
    node: u64,
    spec: WriteSpec,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl WriteExec {
    /// The write of `input` as `spec` says.
    pub fn new(input: Arc<dyn ExecutionPlan>, spec: WriteSpec) -> Self {
        let cache = crate::plan::streaming(
            files_schema(),
            input.properties().output_partitioning().clone(),
        );
        WriteExec {
            input,
            node: crate::services::next_id(),
            spec,
            cache,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The plan it writes.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// What it writes, and how.
    pub fn spec(&self) -> &WriteSpec {
        &self.spec
    }
}

/// The node's output: one row per file written.
pub fn files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("crc32", DataType::UInt32, false),
    ]))
}

fn files_batch(files: &[WrittenFile]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            files.iter().map(|f| f.path.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(files.iter().map(|f| f.rows))),
        Arc::new(UInt64Array::from_iter_values(files.iter().map(|f| f.bytes))),
        Arc::new(UInt32Array::from_iter_values(files.iter().map(|f| f.crc32))),
    ];
    Ok(RecordBatch::try_new(files_schema(), columns)?)
}

/// The files listed in a batch of [`WriteExec`]'s output.
pub fn written_files(batch: &RecordBatch) -> Result<Vec<WrittenFile>> {
    fn column<T: 'static>(b: &RecordBatch, i: usize) -> Result<&T> {
        b.column(i)
            .as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| DataFusionError::Internal("not a batch of written files".into()))
    }
    let path = column::<StringArray>(batch, 0)?;
    let rows = column::<UInt64Array>(batch, 1)?;
    let bytes = column::<UInt64Array>(batch, 2)?;
    let crc = column::<UInt32Array>(batch, 3)?;
    Ok((0..batch.num_rows())
        .map(|i| WrittenFile {
            path: path.value(i).to_string(),
            rows: rows.value(i),
            bytes: bytes.value(i),
            crc32: crc.value(i),
        })
        .collect())
}

impl DisplayAs for WriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "WriteExec: format={}, partition_by=[{}], files=part-NNNNN-{}",
            self.spec.format,
            self.spec.partition_by.join(","),
            self.spec.job
        )
    }
}

impl ExecutionPlan for WriteExec {
    fn name(&self) -> &str {
        "WriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = crate::plan::only_child("WriteExec", children)?;
        Ok(Arc::new(WriteExec::new(input, self.spec.clone())))
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let services = Services::of_task(&context)?;
        let rejects = match &self.spec.books {
            Some(b) => Some(services.books_for(b, context.session_config())?),
            None => None,
        };
        // In a cluster's task the plan holds only the task's partitions: files are named
        // after the partition of the whole write.
        let count = self.cache.output_partitioning().partition_count();
        let named = services.stage_partition(partition, count);
        let progress = services.write_progress(self.spec.progress);
        let task = crate::ledger::rejects::Task {
            node: self.node,
            partition,
        };
        if let Some(r) = &rejects {
            // A partition written again starts its rejected rows afresh.
            r.begin(task)?;
        }
        let part = PartSpec {
            dir: self.spec.dir.clone(),
            name: self.spec.name(named),
            schema: Arc::clone(&self.spec.schema),
            format: self.spec.format,
            compression: self.spec.compression,
            partition_by: self.spec.partition_by.clone(),
            rejects,
            task,
        };
        let upload = match &self.spec.upload {
            Some(url) => Some((
                super::remote::RemoteTarget::open(
                    url,
                    &crate::services::SluiceOptions::storage_options(context.session_config()),
                )
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
                self.spec.dir.clone(),
            )),
            None => None,
        };
        let input = self.input.execute(partition, context)?;
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let write = async move {
            let files = writer::write_stream(input, part, progress)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            if let Some((target, dir)) = &upload {
                for f in &files {
                    let local = dir.join(&f.path);
                    target
                        .upload_as(&local, &f.path)
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    let _ = std::fs::remove_file(&local);
                }
            }
            let batch = files_batch(&files)?;
            metrics.record_output(batch.num_rows());
            Ok(batch)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            files_schema(),
            futures::stream::once(write),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// The write is an ordinary plan node: DataFusion's own `collect` runs it, each
    /// partition writes its file, and the node's output lists them with exact counts.
    #[tokio::test]
    async fn datafusion_runs_the_write_partition_by_partition() {
        let dir = tempfile::tempdir().expect("tmp");
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = |from: i64, to: i64| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from_iter_values(from..to))],
            )
            .expect("batch")
        };
        let input = MemorySourceConfig::try_new_exec(
            &[
                vec![batch(0, 700)],
                vec![batch(700, 1000), batch(1000, 1234)],
            ],
            Arc::clone(&schema),
            None,
        )
        .expect("input");
        let ctx = crate::context::session(2);
        let services = Services::of(ctx.state().config()).expect("services");
        let progress = Arc::new(super::super::WriteProgress::default());
        let spec = WriteSpec {
            dir: dir.path().to_path_buf(),
            job: "testjob".into(),
            single: false,
            schema: Arc::clone(&schema),
            format: Format::Parquet,
            compression: ParquetCompression::default(),
            partition_by: Vec::new(),
            books: None,
            progress: services.keep_write_progress(&progress),
            upload: None,
        };
        let plan: Arc<dyn ExecutionPlan> = Arc::new(WriteExec::new(input, spec));
        let out = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .expect("write");
        let mut files: Vec<WrittenFile> = out
            .iter()
            .flat_map(|b| written_files(b).expect("files"))
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let listed: Vec<(&str, u64)> = files.iter().map(|f| (f.path.as_str(), f.rows)).collect();
        assert_eq!(
            listed,
            [
                ("part-00000-testjob.parquet", 700),
                ("part-00001-testjob.parquet", 534)
            ]
        );
        assert_eq!(
            progress.rows.load(std::sync::atomic::Ordering::Relaxed),
            1234
        );
        for f in &files {
            let path = dir.path().join(&f.path);
            let bytes = std::fs::read(&path).expect("read");
            assert_eq!(bytes.len() as u64, f.bytes);
            assert_eq!(crc32fast::hash(&bytes), f.crc32);
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).expect("open"))
                    .expect("parquet")
                    .build()
                    .expect("reader");
            let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
            assert_eq!(rows as u64, f.rows);
        }
    }
}
