//! `FileByFileExec`: Parquet and ORC scans that account for every file on its own.
//!
//! DataFusion's `DataSourceExec` reads a partition's files as one stream: a file that breaks
//! half-way (a corrupt page, a cut-off stripe) ends the whole stream, so the files after it
//! in the same partition would be lost. This node holds one DataFusion scan per file (or per
//! row-group range of a big file) and runs them in order: rows are counted per file, rows
//! with a null in a `NOT NULL` column are handed to [`Rejects`] with their row number, and a
//! file that fails mid-read is reported in `files_failed` (in `skip`/`reject` mode) while
//! the job goes on. Rows read before the break stay in the output and are counted; the
//! report says how many.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::{filter, filter_record_batch, is_not_null};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Statistics;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::StatisticsArgs;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;

use crate::ledger::rejects::{
    is_bad_row, is_file_fault, row_json, BooksRef, OnError, RejectRecord, Rejects,
};
use crate::services::Services;

/// One file (or one range of a file) and the scan that reads it.
#[derive(Debug, Clone)]
pub struct FilePart {
    /// The file's name as shown to the user.
    pub display: String,
    /// A single-partition scan of just this file or range.
    pub plan: Arc<dyn ExecutionPlan>,
    /// True when the part is the whole file, so row numbers are the file's own.
    pub whole: bool,
    /// The part's first byte (0 for a whole file).
    pub start: u64,
    /// The file's key in its store (to read its footer when it breaks).
    pub location: datafusion::object_store::path::Path,
    /// The file's size in bytes.
    pub size: u64,
    /// ORC (else Parquet): what its scan is made from.
    pub orc: Option<OrcPart>,
}

/// What an ORC part's scan is made from. `datafusion-orc`'s scan has no protobuf form, so a
/// plan sent to another process (a cluster's executor) carries this and the part's scan is
/// made again there ([`OrcPart::plan`]).
#[derive(Debug, Clone)]
pub struct OrcPart {
    /// The file's columns.
    pub file_schema: datafusion::arrow::datatypes::SchemaRef,
    /// Hive partition columns after them.
    pub partition_fields: Vec<datafusion::arrow::datatypes::FieldRef>,
    /// The columns read, by index.
    pub projection: Option<Vec<usize>>,
    /// Rows to stop after.
    pub limit: Option<usize>,
    /// The byte range read (`None`: the whole file).
    pub range: Option<(i64, i64)>,
    /// The file's partition values.
    pub partition_values: Vec<datafusion::common::ScalarValue>,
}

impl OrcPart {
    /// The part's single-file scan of `location` (`size` bytes) in `store_url`.
    pub fn plan(
        &self,
        store_url: &ObjectStoreUrl,
        location: &datafusion::object_store::path::Path,
        size: u64,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        use datafusion::datasource::file_format::FileFormat;
        use datafusion::datasource::listing::PartitionedFile;
        use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
        use datafusion::datasource::source::DataSourceExec;
        use datafusion::datasource::table_schema::TableSchemaBuilder;
        use datafusion::physical_expr::expressions::{Column, Literal};
        use datafusion::physical_expr::PhysicalExpr;
        use datafusion::physical_plan::projection::ProjectionExec;
        // datafusion-orc's scan reads the file's own columns only: the partition columns are
        // appended here, as the part's values.
        let n_file = self.file_schema.fields().len();
        let wanted: Vec<usize> = match &self.projection {
            Some(p) => p.clone(),
            None => (0..n_file + self.partition_fields.len()).collect(),
        };
        let own: Vec<usize> = wanted.iter().copied().filter(|&i| i < n_file).collect();
        let table_schema = TableSchemaBuilder::new(Arc::clone(&self.file_schema)).build();
        let source = datafusion_orc::OrcFormat.file_source(table_schema);
        let mut file = PartitionedFile::new(location.to_string(), size);
        if let Some((start, end)) = self.range {
            file = file.with_range(start, end);
        }
        let config = FileScanConfigBuilder::new(store_url.clone(), source)
            .with_file_groups(vec![FileGroup::new(vec![file])])
            .with_projection_indices(Some(own))?
            .with_limit(self.limit)
            .build();
        let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        if wanted.iter().all(|&i| i < n_file) {
            return Ok(scan);
        }
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::with_capacity(wanted.len());
        let mut at = 0;
        for &i in &wanted {
            if i < n_file {
                let name = self.file_schema.field(i).name().clone();
                exprs.push((Arc::new(Column::new(&name, at)), name));
                at += 1;
            } else {
                let k = i - n_file;
                let field = self.partition_fields.get(k).ok_or_else(|| {
                    DataFusionError::Internal(format!("ORC part: no partition column {k}"))
                })?;
                let value = self.partition_values.get(k).cloned().unwrap_or_else(|| {
                    datafusion::common::ScalarValue::try_from(field.data_type())
                        .unwrap_or(datafusion::common::ScalarValue::Null)
                });
                let value = value.cast_to(field.data_type())?;
                exprs.push((Arc::new(Literal::new(value)), field.name().clone()));
            }
        }
        Ok(Arc::new(ProjectionExec::try_new(exprs, scan)?))
    }
}

/// Reads columnar files one at a time per partition, accounting for each.
#[derive(Debug)]
pub struct FileByFileExec {
    pub(crate) store_url: ObjectStoreUrl,
    pub(crate) partitions: Vec<Vec<FilePart>>,
    /// The rejects and ledger it reports to (in the session's services).
    pub(crate) books: BooksRef,
    /// Output columns (index, name) that must not hold nulls.
    pub(crate) required: Vec<(usize, String)>,
    /// A `LIMIT` was pushed into the parts: a part may end before its last row.
    pub(crate) limited: bool,
    /// This node's id in the row ledger.
    pub(crate) scan_id: u64,
    /// The last three output columns are each row's origin (see
    /// [`crate::ledger::origin`]), appended to what the parts read.
    pub(crate) origin: bool,
    /// The partition of the whole scan this node's partition 0 is (see [`Self::one_per_partition`]).
    pub(crate) partition_offset: usize,
    pub(crate) schema: SchemaRef,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl FileByFileExec {
    /// A scan of `partitions`, each a list of parts read in order. `required` names output
    /// columns (by index) whose nulls make a row a `null_in_not_null` reject; `limited`
    /// says a `LIMIT` was pushed into the parts (which then may end early).
    pub fn new(
        store_url: ObjectStoreUrl,
        schema: SchemaRef,
        partitions: Vec<Vec<FilePart>>,
        required: Vec<(usize, String)>,
        books: BooksRef,
        limited: bool,
    ) -> Self {
        let cache = crate::plan::streaming(
            Arc::clone(&schema),
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
        );
        FileByFileExec {
            store_url,
            partitions,
            books,
            required,
            limited,
            scan_id: crate::ledger::next_scan_id(),
            origin: false,
            partition_offset: 0,
            schema,
            cache,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl FileByFileExec {
    /// The same scan under ledger id `id` (a plan decoded elsewhere keeps its scan's id).
    pub(crate) fn with_scan_id(mut self, id: u64) -> Self {
        self.scan_id = id;
        self
    }

    /// The same scan appending each row's origin: its schema's last three columns (the
    /// parts read the others).
    pub fn with_origin(mut self) -> Self {
        self.origin = true;
        self
    }

    /// The same scan cut into one single-partition scan per partition (same parts, same
    /// ledger id): see [`crate::cluster`].
    pub fn one_per_partition(&self) -> Vec<FileByFileExec> {
        self.partitions
            .iter()
            .enumerate()
            .map(|(p, parts)| {
                let mut scan = FileByFileExec::new(
                    self.store_url.clone(),
                    Arc::clone(&self.schema),
                    vec![parts.clone()],
                    self.required.clone(),
                    self.books,
                    self.limited,
                )
                .with_scan_id(self.scan_id);
                scan.partition_offset = self.partition_offset + p;
                if self.origin {
                    scan.with_origin()
                } else {
                    scan
                }
            })
            .collect()
    }

    /// Every part read, as (file, whole file or a row-group range).
    pub fn parts(&self) -> Vec<(String, bool)> {
        self.partitions
            .iter()
            .flatten()
            .map(|p| (p.display.clone(), p.whole))
            .collect()
    }

    /// How many parts each file of the scan is read in (over all partitions).
    fn parts_per_file(&self) -> std::collections::HashMap<String, usize> {
        let mut parts_of: std::collections::HashMap<String, usize> = Default::default();
        for p in self.partitions.iter().flatten() {
            *parts_of.entry(p.display.clone()).or_default() += 1;
        }
        parts_of
    }
}

impl DisplayAs for FileByFileExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let parts: usize = self.partitions.iter().map(Vec::len).sum();
        write!(
            f,
            "FileByFileExec: partitions={}, parts={parts}, on_error={:?}",
            self.partitions.len(),
            self.books.mode
        )
    }
}

impl ExecutionPlan for FileByFileExec {
    fn name(&self) -> &str {
        "FileByFileExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::plan::leaf(self, children)
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

    /// The files' sizes (a file read in several parts shares its size among them): an
    /// estimate that lets the optimizer broadcast a small table.
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let parts_of = self.parts_per_file();
        let bytes = crate::plan::partition_items(&self.partitions, args.partition())
            .iter()
            .map(|p| p.size / parts_of.get(&p.display).copied().unwrap_or(1).max(1) as u64)
            .sum();
        Ok(crate::plan::estimated_statistics(&self.schema, bytes))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let parts = self.partitions.get(partition).cloned().unwrap_or_default();
        let store = context.runtime_env().object_store(&self.store_url)?;
        let rejects =
            Services::of_task(&context)?.books_for(&self.books, context.session_config())?;
        let required = self.required.clone();
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let (scan, limited, origin) = (self.scan_id, self.limited, self.origin);
        let schema = Arc::clone(&self.schema);
        // A file is read to its end when all of its parts are.
        let parts_of = self.parts_per_file();
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&self.schema), 2);
        let tx = builder.tx();
        let task = crate::ledger::rejects::Task {
            node: scan,
            partition: self.partition_offset + partition,
        };
        builder.spawn(async move {
            rejects.begin(task).map_err(DataFusionError::from)?;
            for part in parts {
                let at = crate::ledger::ReadAt {
                    file: part.display.clone(),
                    start: part.start,
                    scan,
                    task,
                };
                rejects.ledger.begin(&at);
                let mut row = 0u64;
                let read = async {
                    let mut stream = part.plan.execute(0, Arc::clone(&context))?;
                    while let Some(batch) = stream.next().await {
                        let batch = batch?;
                        let first_row = row;
                        let rows = batch.num_rows() as u64;
                        let batch =
                            check_required(&batch, &required, &part, first_row, &at, &rejects)?;
                        let batch = if origin {
                            with_origin(batch, &schema, &part, first_row)?
                        } else {
                            batch.0
                        };
                        row += rows;
                        let ok = batch.num_rows() as u64;
                        if ok > 0 {
                            // Counted as passed on even if the consumer drops it (LIMIT).
                            rejects.count_ok(&at, ok);
                            metrics.record_output(ok as usize);
                            if tx.send(Ok(batch)).await.is_err() {
                                return Ok(false); // the consumer went away
                            }
                        }
                    }
                    Ok::<bool, DataFusionError>(true)
                };
                let result = read.await;
                match result {
                    Ok(true) => {
                        // Rows of the part: for columnar files the independent count is the
                        // footer's, checked per file.
                        rejects.ledger.framed(&at, row);
                        if !limited {
                            // One footer read per file, however many parts it was cut into.
                            let known = rejects.ledger.footer_rows(&part.display);
                            let rows = match known {
                                Some(rows) => Some(rows),
                                None => footer_rows(&store, &part).await,
                            };
                            if let Some(rows) = rows {
                                let parts = parts_of.get(&part.display).copied().unwrap_or(1);
                                rejects.ledger.columnar_part_done(&at, rows, parts);
                            }
                        }
                    }
                    Ok(false) => {
                        return Ok(());
                    }
                    Err(e) if is_bad_row(&e) || !is_file_fault(&e, true) => return Err(e),
                    Err(e) if rejects.mode == OnError::Fail => {
                        return Err(DataFusionError::External(Box::new(
                            crate::error::Error::file(&part.display, super::infer::read_error(&e)),
                        )))
                    }
                    // The rows before the break were passed on and counted; the file is
                    // reported with the rows its footer promised, and the next one is read.
                    Err(e) => {
                        let expected = if part.whole {
                            footer_rows(&store, &part).await
                        } else {
                            None
                        };
                        rejects.file_failed_expecting(
                            &part.display,
                            &super::infer::read_error(&e),
                            expected,
                        )
                    }
                }
            }
            Ok(())
        });
        Ok(builder.build())
    }
}

/// The row count a file's footer declares, if the footer can be read.
async fn footer_rows(store: &Arc<dyn ObjectStore>, part: &FilePart) -> Option<u64> {
    if part.orc.is_some() {
        let mut reader = OrcFooterReader {
            store: Arc::clone(store),
            location: part.location.clone(),
            size: part.size,
        };
        let meta = orc_rust::reader::metadata::read_metadata_async(&mut reader)
            .await
            .ok()?;
        return Some(meta.number_of_rows());
    }
    let object = datafusion::object_store::ObjectMeta {
        location: part.location.clone(),
        last_modified: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
        size: part.size,
        e_tag: None,
        version: None,
    };
    let meta = datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata::new(
        store.as_ref(),
        &object,
    )
    .fetch_metadata()
    .await
    .ok()?;
    u64::try_from(meta.file_metadata().num_rows()).ok()
}

/// Ranged reads of an ORC file in an object store, for its footer.
struct OrcFooterReader {
    store: Arc<dyn ObjectStore>,
    location: datafusion::object_store::path::Path,
    size: u64,
}

impl orc_rust::reader::AsyncChunkReader for OrcFooterReader {
    fn len(&mut self) -> futures::future::BoxFuture<'_, std::io::Result<u64>> {
        let size = self.size;
        Box::pin(async move { Ok(size) })
    }

    fn get_bytes(
        &mut self,
        offset_from_start: u64,
        length: u64,
    ) -> futures::future::BoxFuture<'_, std::io::Result<bytes::Bytes>> {
        Box::pin(async move {
            let end = offset_from_start.saturating_add(length).min(self.size);
            self.store
                .get_range(&self.location, offset_from_start..end)
                .await
                .map_err(std::io::Error::other)
        })
    }
}

/// `kept` (the rows of a batch whose first row is `first_row` in the part that `keep`
/// selects, all when `None`) with each row's origin appended: the file, its row number
/// (0 when the part is a range of the file) and no byte offset.
fn with_origin(
    (kept, keep): (RecordBatch, Option<BooleanArray>),
    schema: &SchemaRef,
    part: &FilePart,
    first_row: u64,
) -> Result<RecordBatch> {
    let read = keep.as_ref().map_or(kept.num_rows(), |k| k.len()) as u64;
    let numbers: ArrayRef = Arc::new(UInt64Array::from_iter_values(
        (first_row + 1..=first_row + read).map(|r| if part.whole { r } else { 0 }),
    ));
    let numbers = match &keep {
        Some(k) => filter(numbers.as_ref(), k)?,
        None => numbers,
    };
    let n = kept.num_rows();
    let mut columns = kept.columns().to_vec();
    columns.extend(crate::ledger::origin::without_offsets(
        &part.display,
        numbers,
        n,
    )?);
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )?)
}

/// Hands rows with a null in a required column to the rejects and returns the others (and
/// which they are, unless all are).
fn check_required(
    batch: &RecordBatch,
    required: &[(usize, String)],
    part: &FilePart,
    first_row: u64,
    at: &crate::ledger::ReadAt,
    rejects: &Rejects,
) -> Result<(RecordBatch, Option<BooleanArray>)> {
    let mut keep: Option<BooleanArray> = None;
    for (index, _) in required {
        let column = batch.column(*index);
        if column.null_count() == 0 {
            continue;
        }
        let ok = is_not_null(column)?;
        keep = Some(match keep {
            None => ok,
            Some(k) => datafusion::arrow::compute::and(&k, &ok)?,
        });
    }
    let Some(keep) = keep else {
        return Ok((batch.clone(), None));
    };
    for i in (0..batch.num_rows()).filter(|&i| !keep.value(i)) {
        let column = required
            .iter()
            .find(|(c, _)| batch.column(*c).is_null(i))
            .map(|(_, name)| name.clone());
        let (raw, raw_truncated) = row_json(&batch.slice(i, 1));
        let record = RejectRecord {
            file: part.display.clone(),
            line: if part.whole {
                first_row + i as u64 + 1
            } else {
                0
            },
            byte_offset: 0,
            message: format!(
                "null in NOT NULL column '{}'",
                column.as_deref().unwrap_or("?")
            ),
            column,
            kind: "null_in_not_null",
            raw,
            raw_truncated,
            columnar: true,
            ..RejectRecord::default()
        };
        rejects.bad_row(record, at).map_err(DataFusionError::from)?;
    }
    Ok((filter_record_batch(batch, &keep)?, Some(keep)))
}
