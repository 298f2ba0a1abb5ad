//! [`Pipeline`]: a job built in code, step by step, mirroring the pipeline file — plus what
//! only code can give: custom scalar functions for SQL and batch functions.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::logical_expr::ScalarUDF;

use crate::enrich::EnrichSpec;
use crate::job::{BatchFn, Job, Stage, Transform};
use crate::lookup::LookupSpec;
use crate::report::{Progress, Report};
use crate::sink::SinkOptions;
use crate::source::ReadOptions;

/// Builds and runs a [`Job`]: read, then stages in the order they are added, then write.
///
/// ```no_run
/// use sluice::datafusion::arrow::array::{Float64Array, RecordBatch, StringArray};
/// use sluice::datafusion::arrow::datatypes::{DataType, Field, Schema};
/// use sluice::{Pipeline, SinkOptions};
/// use std::sync::Arc;
///
/// # async fn demo() -> sluice::Result<()> {
/// let report = Pipeline::read(["data/*.csv"])
///     .sql("SELECT id, text FROM source WHERE text IS NOT NULL")
///     .map_batches("score", |batch: RecordBatch| {
///         // Any Rust code over a batch; runs on every partition in parallel.
///         let text = batch.column_by_name("text").expect("text column");
///         let text = text.as_any().downcast_ref::<StringArray>().expect("strings");
///         let score: Float64Array = text.iter().map(|t| t.map(|t| t.len() as f64)).collect();
///         let mut fields = batch.schema().fields().to_vec();
///         fields.push(Arc::new(Field::new("score", DataType::Float64, true)));
///         let mut columns = batch.columns().to_vec();
///         columns.push(Arc::new(score));
///         Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
///     })
///     .write(SinkOptions { path: "out".into(), ..SinkOptions::default() })
///     .run()
///     .await?;
/// println!("{} rows in, {} out", report.rows_in, report.rows_out);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Pipeline {
    job: Job,
}

impl Pipeline {
    /// Reads these files, folders and globs with default options.
    pub fn read<S: Into<String>>(paths: impl IntoIterator<Item = S>) -> Pipeline {
        Pipeline::read_with(ReadOptions {
            paths: paths.into_iter().map(Into::into).collect(),
            ..ReadOptions::default()
        })
    }

    /// Reads with full options (the `[source]` section).
    pub fn read_with(options: ReadOptions) -> Pipeline {
        Pipeline {
            job: Job {
                source: options,
                ..Job::default()
            },
        }
    }

    /// A SQL step over `source` (the previous stage's output).
    pub fn sql(self, sql: impl Into<String>) -> Pipeline {
        self.stage(Stage::Sql(Transform {
            name: None,
            sql: sql.into(),
        }))
    }

    /// A SQL step that later steps can also read as `name`.
    pub fn sql_named(self, name: impl Into<String>, sql: impl Into<String>) -> Pipeline {
        self.stage(Stage::Sql(Transform {
            name: Some(name.into()),
            sql: sql.into(),
        }))
    }

    /// A broadcast lookup (`[[lookup]]`).
    pub fn lookup(self, spec: LookupSpec) -> Pipeline {
        self.stage(Stage::Lookup(Box::new(spec)))
    }

    /// An HTTP enrich stage (`[[enrich]]`).
    pub fn enrich(self, spec: EnrichSpec) -> Pipeline {
        self.stage(Stage::Enrich(Box::new(spec)))
    }

    /// A batch function: every batch of the previous stage goes through `f`, on all
    /// partitions in parallel. `f` is first called once on an empty batch to learn its
    /// output schema; every batch it returns must have that schema.
    pub fn map_batches(
        self,
        name: impl Into<String>,
        f: impl Fn(RecordBatch) -> datafusion::error::Result<RecordBatch> + Send + Sync + 'static,
    ) -> Pipeline {
        self.stage(Stage::Batches(BatchFn {
            name: name.into(),
            f: Arc::new(f),
        }))
    }

    /// Adds any stage.
    pub fn stage(mut self, stage: Stage) -> Pipeline {
        self.job.stages.push(stage);
        self
    }

    /// Registers a scalar function for the SQL steps (e.g. built with
    /// `datafusion::logical_expr::create_udf`).
    pub fn udf(mut self, udf: ScalarUDF) -> Pipeline {
        self.job.udfs.push(udf);
        self
    }

    /// Threads (and partitions) to use.
    pub fn threads(mut self, threads: usize) -> Pipeline {
        self.job.threads = threads;
        self
    }

    /// Runs the job on a cluster (`sluice cluster scheduler`, executors that registered
    /// this pipeline's batch functions: [`crate::cluster::ExecutorOptions::functions`]).
    pub fn cluster(mut self, url: crate::cluster::SchedulerUrl) -> Pipeline {
        self.job.cluster = Some(url);
        self
    }

    /// Where and how to write (the `[sink]` section).
    pub fn write(mut self, sink: SinkOptions) -> Pipeline {
        self.job.sink = sink;
        self
    }

    /// The job this pipeline describes.
    pub fn into_job(self) -> Job {
        self.job
    }

    /// Runs the job and returns its report.
    pub async fn run(self) -> crate::error::Result<Report> {
        self.job.run(&Progress::default()).await
    }

    /// Runs the job, updating `progress` as it goes.
    pub async fn run_with(self, progress: &Progress) -> crate::error::Result<Report> {
        self.job.run(progress).await
    }
}
