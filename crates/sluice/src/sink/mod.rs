//! Writing results: Parquet, CSV or NDJSON; a chosen number of files; Hive-style
//! `partition_by` folders; written to a staging folder and moved into place at the end.

pub mod commit;
pub mod exec;
/// Partition folder naming (moved to [`crate::storage::partition`]).
pub use crate::storage::partition as hive;
pub mod json_text;
pub mod ordered;
pub mod remote;
mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::logical_expr::{cast, Expr};
use datafusion::physical_plan::{execute_stream_partitioned, ExecutionPlan};
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;
use serde::Serialize;

use crate::error::{blocking, Error, Result};
use crate::storage::format::Format;
pub use crate::storage::manifest::{Manifest, WrittenFile};
use commit::Commit;
pub use writer::ParquetCompression;

/// What to do when the output already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Fail if the output exists (Spark's `errorifexists`, the default).
    #[default]
    Error,
    /// Replace the output, at commit time only.
    Overwrite,
    /// Add new files beside the existing ones.
    Append,
}

impl FromStr for WriteMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "error" | "errorifexists" => Ok(WriteMode::Error),
            "overwrite" => Ok(WriteMode::Overwrite),
            "append" => Ok(WriteMode::Append),
            other => Err(Error::Config(format!(
                "mode must be error, overwrite or append, not '{other}'"
            ))),
        }
    }
}

/// Where and how to write (the `[sink]` section, or `ingest --to` flags).
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// A directory, or a single file when it ends in a format's extension.
    pub path: String,
    /// Output format; default from the path's extension, else Parquet.
    pub format: Option<Format>,
    /// Number of output files (per partition folder with `partition_by`).
    pub files: Option<usize>,
    /// Columns to partition by, Hive-style (`col=value/`).
    pub partition_by: Vec<String>,
    /// What to do when the output exists.
    pub mode: WriteMode,
    /// Parquet compression codec (zstd by default).
    pub compression: Option<ParquetCompression>,
    /// Where rejected rows go instead of `OUT/_rejects/`: one file. Moved there after the
    /// output is committed (it is not part of the output's atomic commit).
    pub rejects: Option<String>,
    /// Format of the rejects: NDJSON (default) or Parquet; default Parquet when `rejects`
    /// ends in `.parquet`.
    pub rejects_format: Option<Format>,
    /// Options of a remote object store (`s3://...` outputs).
    pub storage: crate::storage::stores::StorageOptions,
    /// CSV bound for spreadsheets: text cells starting with `=`, `+`, `-`, `@`, tab or
    /// carriage return get a leading `'` (OWASP's advice against formula injection).
    pub csv_safe: bool,
    /// A database output's table (`SCHEMA.NAME`).
    pub table: Option<String>,
    /// A database output: insert or update by these key columns.
    pub upsert: Vec<String>,
    /// A database output: create the table when it is missing (default true).
    pub create: Option<bool>,
}

/// What a write produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteSummary {
    /// Files written, in name order.
    pub files: Vec<WrittenFile>,
    /// Total rows written.
    pub rows: u64,
    /// Total bytes written.
    pub bytes: u64,
    /// The job's row ledger, closed before the commit (when the job read input files).
    pub books: Option<crate::ledger::Books>,
}

impl WriteSummary {
    /// The summary of these files.
    pub fn of(files: Vec<WrittenFile>) -> WriteSummary {
        WriteSummary {
            rows: files.iter().map(|f| f.rows).sum(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            files,
            books: None,
        }
    }
}

/// Before a commit: the rejects file is complete, input files that could not be read stop
/// the commit unless the job allows them, and the row ledger must balance.
fn close_books(
    r: &crate::ledger::rejects::Rejects,
    flow: &crate::ledger::PlanFlow,
    files: &[WrittenFile],
    options: &SinkOptions,
) -> Result<crate::ledger::Books> {
    let records = r.finish(options.rejects_parquet())?;
    r.check_failed()?;
    crate::ledger::close(
        &r.ledger,
        flow,
        records,
        r.rejected_later(),
        r.rejected_at_write(),
        files.iter().map(|f| f.rows).sum(),
    )
}

pub use crate::ledger::WriteProgress;

impl SinkOptions {
    /// True when the output is a database table (`postgres://`).
    pub fn is_database(&self) -> bool {
        crate::db::is_database(&self.path)
    }

    /// The output as shown to the user: a database output as its URL without the password,
    /// then the table.
    pub fn shown(&self) -> String {
        if self.is_database() {
            format!(
                "{} {}",
                crate::db::postgres::shown(&self.path),
                self.table.as_deref().unwrap_or("")
            )
            .trim_end()
            .to_string()
        } else {
            self.path.clone()
        }
    }

    /// Where a database output's rejected rows go: `rejects`, else `TABLE_rejects.ndjson`
    /// (`.parquet` with the Parquet rejects format) in the working folder.
    pub fn database_rejects(&self) -> String {
        match &self.rejects {
            Some(r) => r.clone(),
            None => format!(
                "{}_rejects.{}",
                self.table.as_deref().unwrap_or("table"),
                if self.rejects_parquet() {
                    "parquet"
                } else {
                    "ndjson"
                }
            ),
        }
    }

    /// True when rejected rows are written as Parquet.
    pub fn rejects_parquet(&self) -> bool {
        match self.rejects_format {
            Some(f) => f == Format::Parquet,
            None => self
                .rejects
                .as_deref()
                .is_some_and(|p| Format::from_path(p) == Some(Format::Parquet)),
        }
    }

    /// The output format this sink writes.
    pub fn resolved_format(&self) -> Format {
        self.format
            .or_else(|| {
                self.single_file_target()
                    .then(|| Format::from_path(&self.path))
                    .flatten()
            })
            .unwrap_or(Format::Parquet)
    }

    /// True when the path names one file (it ends in a known extension and no
    /// partitioning or file count asks for a folder).
    pub fn single_file_target(&self) -> bool {
        self.partition_by.is_empty()
            && self.files.unwrap_or(1) == 1
            && Format::from_path(&self.path).is_some()
    }

    fn validate(&self, schema: &Schema) -> Result<()> {
        if self.path.is_empty() {
            return Err(Error::Config("the output path is empty".into()));
        }
        if self.files == Some(0) {
            return Err(Error::Config("--files must be at least 1".into()));
        }
        if let Some(f) = self
            .rejects_format
            .filter(|f| !matches!(f, Format::Ndjson | Format::Parquet))
        {
            return Err(Error::Config(format!(
                "rejects format must be ndjson or parquet, not {}",
                f.extension()
            )));
        }
        if self.resolved_format() == Format::Orc {
            return Err(Error::Config(
                "ORC output is not supported: write parquet, csv or ndjson".into(),
            ));
        }
        for col in &self.partition_by {
            if schema.index_of(col).is_err() {
                return Err(Error::Config(format!(
                    "partition_by column '{col}' is not in the output (columns: {})",
                    crate::error::column_list(schema)
                )));
            }
        }
        if !self.partition_by.is_empty() && self.partition_by.len() == schema.fields().len() {
            return Err(Error::Config(
                "partition_by names every column: no data columns would be left".into(),
            ));
        }
        Ok(())
    }
}

/// Writes a DataFrame and commits it. Returns what was written and the executed plan (whose
/// metrics tell how many rows were read). With `cluster`, the plan, write included, runs on
/// that cluster; its files are committed here.
pub async fn write(
    df: DataFrame,
    options: &SinkOptions,
    threads: usize,
    progress: Arc<WriteProgress>,
    rejects: Option<&Arc<crate::ledger::rejects::Rejects>>,
    cluster: Option<&crate::cluster::SchedulerUrl>,
) -> Result<(WriteSummary, Arc<dyn ExecutionPlan>)> {
    if options.is_database() {
        if cluster.is_some() {
            return Err(Error::Config(
                "a job on a cluster writes to a folder or an object store, not to a \
                 database (yet): run it here"
                    .into(),
            ));
        }
        return write_database(df, options, threads, progress, rejects).await;
    }
    if crate::storage::stores::is_remote(&options.path) {
        return write_remote(df, options, threads, progress, rejects, cluster).await;
    }
    let (df, schema, format) = prepare(df, options)?;
    let target = PathBuf::from(&options.path);
    let single = options.single_file_target();
    check_target(&target, options.mode, single)?;
    let (task_ctx, plan, job) = plan_streams(df, options, threads).await?;
    let commit = {
        let (target, job) = (target.clone(), job.clone());
        blocking(move || Commit::begin(&target, &job)).await?
    };
    let job = job.as_str();
    // The target may have changed while we waited for the lock or recovered a crash.
    check_target(&target, options.mode, single)?;
    for note in &commit.recovered {
        tracing::warn!("{}: {note}", target.display());
    }
    // Rejected rows are staged with the output and committed with it.
    if let Some(r) = rejects {
        // A whole path: a cluster's executors write there too.
        let dir = commit.staging().join(commit::REJECTS_DIR);
        r.set_dir(std::path::absolute(&dir).unwrap_or(dir));
    }

    let result = run_writers(
        Arc::clone(&plan),
        task_ctx,
        &schema,
        options,
        format,
        commit.staging(),
        job,
        single,
        progress,
        rejects.cloned(),
        cluster,
        None,
    )
    .await;
    // Closing the books (the rejects file's fsync) and the commit (renames, fsyncs) run on a
    // blocking thread.
    let (options, rejects) = (options.clone(), rejects.cloned());
    let summary = blocking(move || {
        let result = match (result, rejects) {
            (Ok((files, flow)), Some(r)) => {
                close_books(&r, &flow, &files, &options).map(|b| (files, Some(b)))
            }
            (other, _) => other.map(|(files, _)| (files, None)),
        };
        let (files, books) = match result {
            Ok(done) => done,
            Err(e) => {
                commit.abort();
                return Err(e);
            }
        };
        let summary = WriteSummary {
            books,
            ..WriteSummary::of(files.clone())
        };
        if single {
            let file = files
                .first()
                .ok_or_else(|| Error::Config("no output file was written".into()))?;
            commit.commit_file(&file.path)?;
            move_rejects(
                &options,
                &format!("{}{}", options.path, commit::REJECTS_DIR),
            )?;
        } else {
            commit.commit_dir(options.mode, files)?;
            let dir = Path::new(&options.path).join(commit::REJECTS_DIR);
            move_rejects(&options, &dir.display().to_string())?;
        }
        Ok(summary)
    })
    .await?;
    Ok((summary, plan))
}

/// The DataFrame with portable types, its schema and the output format, checked against the
/// options.
fn prepare(df: DataFrame, options: &SinkOptions) -> Result<(DataFrame, SchemaRef, Format)> {
    let format = options.resolved_format();
    let df = portable_types(df, format)?;
    let df = if options.csv_safe && format == Format::Csv {
        json_text::csv_safe(df)?
    } else {
        df
    };
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    options.validate(&schema)?;
    Ok((df, schema, format))
}

/// The physical plan shaped into one output stream per file to write, its task context,
/// and a new job id.
async fn plan_streams(
    df: DataFrame,
    options: &SinkOptions,
    threads: usize,
) -> Result<(
    Arc<datafusion::execution::TaskContext>,
    Arc<dyn ExecutionPlan>,
    String,
)> {
    let streams = if options.single_file_target() {
        1
    } else {
        options.files.unwrap_or(threads.max(1))
    };
    let task_ctx = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let hash_by = (!options.partition_by.is_empty() && options.files.is_none())
        .then_some(options.partition_by.as_slice());
    let plan = shape_partitions(plan, streams, hash_by)?;
    let job = uuid::Uuid::new_v4().simple().to_string();
    Ok((task_ctx, plan, job[..commit::JOB_ID_LEN].to_string()))
}

/// The plan [`write`] would run for `df` (shaped into its output streams, under the write
/// node), never run: what `sluice explain --cluster` cuts into stages. A database output
/// has no write node (it is loaded from the streams).
pub async fn plan_for_explain(
    df: DataFrame,
    options: &SinkOptions,
    threads: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    if options.is_database() {
        let (_, plan, _) = plan_streams(df, options, threads).await?;
        return Ok(plan);
    }
    let (df, schema, format) = prepare(df, options)?;
    let (_, plan, job) = plan_streams(df, options, threads).await?;
    let dir = PathBuf::from(&options.path);
    let spec = write_spec(
        options,
        schema,
        format,
        dir,
        &job,
        options.single_file_target(),
    );
    Ok(Arc::new(exec::WriteExec::new(plan, spec)))
}

/// What the write node writes for `options`: no books, progress counter or upload.
fn write_spec(
    options: &SinkOptions,
    schema: SchemaRef,
    format: Format,
    dir: PathBuf,
    job: &str,
    single: bool,
) -> exec::WriteSpec {
    exec::WriteSpec {
        dir,
        job: job.to_string(),
        single,
        schema,
        format,
        compression: options.compression.unwrap_or_default(),
        partition_by: options.partition_by.clone(),
        books: None,
        progress: 0,
        upload: None,
    }
}

/// [`write`] to a database table: the rows loaded in one transaction, committed after the
/// books balance (see [`crate::db::postgres::write`]).
async fn write_database(
    df: DataFrame,
    options: &SinkOptions,
    threads: usize,
    progress: Arc<WriteProgress>,
    rejects: Option<&Arc<crate::ledger::rejects::Rejects>>,
) -> Result<(WriteSummary, Arc<dyn ExecutionPlan>)> {
    use crate::db::postgres::write::{LoadOptions, Target};
    if !options.partition_by.is_empty() {
        return Err(Error::Config(
            "partition_by is for folders: a database table takes all rows".into(),
        ));
    }
    let (df, schema, _) = prepare(df, options)?;
    let target = Target::open(&options.path, options.table.as_deref())?;
    let (task_ctx, plan, job) = plan_streams(df, options, threads).await?;
    // Rejected rows are written locally, then moved where the sink says.
    let staging = std::env::temp_dir().join(format!("sluice-db-{job}"));
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(staging.display().to_string(), e))?;
    let rejects_dir = staging.join(commit::REJECTS_DIR);
    if let Some(r) = rejects {
        r.set_dir(rejects_dir.clone());
    }
    let result = async {
        let streams = execute_stream_partitioned(Arc::clone(&plan), task_ctx)?;
        let load = LoadOptions {
            mode: options.mode,
            upsert: options.upsert.clone(),
            create: options.create.unwrap_or(true),
        };
        let pending = target.load(&schema, streams, &load, progress).await?;
        let file = WrittenFile {
            path: target.display.clone(),
            rows: pending.rows,
            bytes: pending.bytes,
            crc32: 0,
        };
        let mut books = None;
        if let Some(r) = rejects {
            let flow = crate::ledger::plan_flow(&plan);
            let (r, files, options) = (Arc::clone(r), vec![file.clone()], options.clone());
            let dir = rejects_dir.display().to_string();
            books = Some(
                blocking(move || {
                    let books = close_books(&r, &flow, &files, &options)?;
                    let moved = SinkOptions {
                        rejects: Some(options.database_rejects()),
                        ..options
                    };
                    move_rejects(&moved, &dir)?;
                    Ok(books)
                })
                .await?,
            );
        }
        // The books balance: the rows appear now, all at once.
        pending.commit(&target.display).await?;
        Ok::<_, Error>((file, books))
    }
    .await;
    let _ = std::fs::remove_dir_all(&staging);
    let (file, books) = result?;
    let summary = WriteSummary {
        books,
        ..WriteSummary::of(vec![file])
    };
    Ok((summary, plan))
}

/// [`write`] to an object store: staged locally, uploaded, manifest last (see
/// [`remote`]).
async fn write_remote(
    df: DataFrame,
    options: &SinkOptions,
    threads: usize,
    progress: Arc<WriteProgress>,
    rejects: Option<&Arc<crate::ledger::rejects::Rejects>>,
    cluster: Option<&crate::cluster::SchedulerUrl>,
) -> Result<(WriteSummary, Arc<dyn ExecutionPlan>)> {
    let (df, schema, format) = prepare(df, options)?;
    let single = options.single_file_target();
    let target = remote::RemoteTarget::open(&options.path, &options.storage)?;
    target.check(options.mode, single).await?;
    let (task_ctx, plan, job) = plan_streams(df, options, threads).await?;
    let job = job.as_str();
    let staging = std::env::temp_dir().join(format!("sluice-upload-{job}"));
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(staging.display().to_string(), e))?;
    if let Some(r) = rejects {
        r.set_dir(staging.join(commit::REJECTS_DIR));
    }
    // On a cluster the tasks upload their files under their final names, and their books
    // (ledgers, rejected rows) below this prefix, read back here before the commit.
    let books = format!("{}{job}", remote::BOOKS_PREFIX);
    let upload = cluster.map(|_| Upload {
        target: &target,
        books: &books,
    });
    let result = async {
        let (files, flow) = run_writers(
            Arc::clone(&plan),
            task_ctx,
            &schema,
            options,
            format,
            &staging,
            job,
            single,
            progress,
            rejects.cloned(),
            cluster,
            upload,
        )
        .await?;
        let mut books = None;
        if let Some(r) = rejects {
            let (r, files, options) = (Arc::clone(r), files.clone(), options.clone());
            let rejects_dir = staging.join(commit::REJECTS_DIR).display().to_string();
            books = Some(
                blocking(move || {
                    let books = close_books(&r, &flow, &files, &options)?;
                    // `--rejects PATH`: a local file of the user's choice instead of the bucket.
                    if options.rejects.is_some() {
                        move_rejects(&options, &rejects_dir)?;
                    }
                    Ok(books)
                })
                .await?,
            );
        }
        match cluster {
            None => {
                target
                    .commit(&staging, job, options.mode, files.clone(), single)
                    .await?
            }
            Some(_) => {
                if let (true, Some(f)) = (single, files.first()) {
                    // The task uploaded the file below the target's name: it takes that
                    // name now, once the books are checked (one server-side copy).
                    target.move_into_place(&f.path).await?;
                }
                let up = target
                    .upload_rejects(&staging, job, options.mode, files.clone(), single)
                    .await?;
                target.publish(up).await?
            }
        }
        Ok::<_, Error>((files, books))
    }
    .await;
    if cluster.is_some() {
        // The books read back, and after a failure the files the tasks uploaded: nothing
        // of this job stays beside the output (readers ignore unlisted files anyway).
        target
            .clean_up(&books, result.is_err().then_some(job))
            .await;
    }
    let _ = std::fs::remove_dir_all(&staging);
    let (files, books) = result?;
    let summary = WriteSummary {
        books,
        ..WriteSummary::of(files)
    };
    Ok((summary, plan))
}

/// An object-store output written by a cluster's tasks: each uploads its files to the
/// target under their final names and its books below `books` (relative to the target).
#[derive(Clone, Copy)]
struct Upload<'a> {
    target: &'a remote::RemoteTarget,
    books: &'a str,
}

/// The folder below the client's staging folder that stands for each task's own scratch
/// when a cluster's tasks upload what they write ([`Upload`]): never read by the client.
const TASKS_DIR: &str = "tasks";

#[allow(clippy::too_many_arguments)]
async fn run_writers(
    plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<datafusion::execution::TaskContext>,
    schema: &SchemaRef,
    options: &SinkOptions,
    format: Format,
    staging: &Path,
    job: &str,
    single: bool,
    progress: Arc<WriteProgress>,
    rejects: Option<Arc<crate::ledger::rejects::Rejects>>,
    cluster: Option<&crate::cluster::SchedulerUrl>,
    upload: Option<Upload<'_>>,
) -> Result<(Vec<WrittenFile>, crate::ledger::PlanFlow)> {
    let services = crate::services::Services::of(task_ctx.session_config())?;
    // Executors run elsewhere: they are given the staging folder as a whole path (with an
    // upload, a folder of their own machines: see TASKS_DIR).
    let staging_whole = match cluster {
        Some(_) => {
            std::path::absolute(staging).map_err(|e| Error::io(staging.display().to_string(), e))?
        }
        None => staging.to_path_buf(),
    };
    let dir = match upload {
        Some(_) => staging_whole.join(TASKS_DIR),
        None => staging_whole.clone(),
    };
    // The tasks of a cluster's job leave their ledgers beside the rejected rows.
    let ledger_dir = dir.join(commit::REJECTS_DIR);
    let spec = exec::WriteSpec {
        books: rejects.map(|r| {
            services.keep_books(&r);
            r.books()
        }),
        progress: services.keep_write_progress(&progress),
        upload: upload.map(|u| u.target.url().to_string()),
        ..write_spec(options, Arc::clone(schema), format, dir, job, single)
    };
    // The write runs inside the plan: one task per partition drains it into its files.
    let node: Arc<dyn ExecutionPlan> = Arc::new(exec::WriteExec::new(Arc::clone(&plan), spec));
    let (mut files, flow) = match cluster {
        None => {
            let files = write_here(node, task_ctx).await?;
            (files, crate::ledger::plan_flow(&plan))
        }
        Some(url) => {
            let config = task_ctx.session_config().clone();
            let books = upload.map(|u| format!("{}/{}", u.target.url(), u.books));
            let files = write_there(url, node, &config, &ledger_dir, books.as_deref()).await;
            // What the tasks counted comes back whether the job worked or not (a failed
            // job's rejects files are removed with its staging folder); uploaded books are
            // read back into the client's rejects folder first.
            let ledger_dir = match upload {
                Some(u) => {
                    let into = staging_whole.join(commit::REJECTS_DIR);
                    u.target.download_below(u.books, &into).await?;
                    into
                }
                None => ledger_dir,
            };
            let mut flow = crate::cluster::absorb(&config, &ledger_dir)?;
            // The plan's output is what its write nodes took in.
            flow.out = flow.written;
            (files?, flow)
        }
    };
    files.sort_by(|a, b| a.path.cmp(&b.path));
    // Without an explicit `--files`, a stream that got no rows leaves no empty file behind
    // (one file stays when there are no rows at all, to carry the schema).
    if options.files.is_none() && options.partition_by.is_empty() && files.len() > 1 {
        let keep_one = files.iter().all(|f| f.rows == 0);
        let mut kept = Vec::with_capacity(files.len());
        for f in files {
            if f.rows > 0 || (keep_one && kept.is_empty()) {
                kept.push(f);
            } else if let Some(u) = upload {
                u.target.delete(&f.path).await?;
            } else {
                let path = staging.join(&f.path);
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io(path.display().to_string(), e))?;
            }
        }
        files = kept;
    }
    Ok((files, flow))
}

/// Runs the write `node` here: the files its tasks wrote.
async fn write_here(
    node: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<datafusion::execution::TaskContext>,
) -> Result<Vec<WrittenFile>> {
    let streams = execute_stream_partitioned(node, task_ctx)?;
    let mut tasks = tokio::task::JoinSet::new();
    for stream in streams {
        tasks.spawn(async move {
            let batches: Vec<_> = stream.try_collect().await.map_err(Error::from_engine)?;
            let mut files = Vec::new();
            for b in &batches {
                files.extend(exec::written_files(b)?);
            }
            Ok::<_, Error>(files)
        });
    }
    let mut files = Vec::new();
    let mut first_err: Option<Error> = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(mut written)) => files.append(&mut written),
            Ok(Err(e)) => {
                if first_err.is_none() {
                    first_err = Some(e);
                    tasks.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(Error::Config(format!("writer task failed: {e}")));
                    tasks.abort_all();
                }
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(files)
}

/// Runs the write `node` on the cluster at `url`: the files its tasks wrote.
async fn write_there(
    url: &crate::cluster::SchedulerUrl,
    node: Arc<dyn ExecutionPlan>,
    config: &datafusion::prelude::SessionConfig,
    ledger_dir: &Path,
    remote_books: Option<&str>,
) -> Result<Vec<WrittenFile>> {
    let failed = |e: datafusion::error::DataFusionError| match crate::cluster::job_error(&e) {
        // The line sluice wrote on the executor (a bad row, a broken file).
        Some(line) => Error::BadRow(line),
        None => Error::from_engine(e),
    };
    let stream = crate::cluster::execute(url, node, config, ledger_dir, remote_books)
        .await
        .map_err(failed)?;
    let batches: Vec<_> = stream.try_collect().await.map_err(failed)?;
    let mut files = Vec::new();
    for b in &batches {
        files.extend(exec::written_files(b)?);
    }
    Ok(files)
}

/// With `--rejects PATH`, moves the committed rejects file there.
fn move_rejects(options: &SinkOptions, committed_dir: &str) -> Result<()> {
    let Some(dest) = &options.rejects else {
        return Ok(());
    };
    let dir = Path::new(committed_dir);
    let ext = if options.rejects_parquet() {
        "parquet"
    } else {
        "ndjson"
    };
    let file = dir.join(format!("rejects.{ext}"));
    if file.is_file() {
        let dest = Path::new(dest);
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(parent.display().to_string(), e))?;
        }
        std::fs::rename(&file, dest).map_err(|e| Error::io(dest.display().to_string(), e))?;
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

/// Gives the plan exactly `streams` output partitions: one writer task (and file) each.
///
/// With `hash_by`, rows are hash-partitioned on those columns so that each partition folder
/// is written by exactly one task, i.e. holds one file.
fn shape_partitions(
    plan: Arc<dyn ExecutionPlan>,
    streams: usize,
    hash_by: Option<&[String]>,
) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::physical_plan::Partitioning as P;
    if let Some(cols) = hash_by {
        let schema = plan.schema();
        let exprs = cols
            .iter()
            .map(|c| col(c, &schema))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        return Ok(Arc::new(RepartitionExec::try_new(
            plan,
            P::Hash(exprs, streams),
        )?));
    }
    let have = plan.properties().output_partitioning().partition_count();
    if have == streams {
        Ok(plan)
    } else if streams == 1 {
        // One file keeps the input's row order (partitions are in input order).
        Ok(Arc::new(ordered::OrderedConcatExec::new(plan)))
    } else {
        Ok(Arc::new(RepartitionExec::try_new(
            plan,
            P::RoundRobinBatch(streams),
        )?))
    }
}

/// Converts types other engines misread: second-precision timestamps become milliseconds
/// in Parquet (which has no second unit), and dictionary columns are written as plain values.
fn portable_types(df: DataFrame, format: Format) -> Result<DataFrame> {
    let schema = df.schema().as_arrow().clone();
    let as_text = |dt: &DataType| format == Format::Csv && json_text::is_nested(dt);
    let needs = schema
        .fields()
        .iter()
        .any(|f| convert_type(f.data_type(), format).is_some() || as_text(f.data_type()));
    if !needs {
        return Ok(df);
    }
    let exprs: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| {
            let c = Expr::Column(datafusion::common::Column::new_unqualified(f.name()));
            match convert_type(f.data_type(), format) {
                // CSV holds nested values as their JSON text.
                _ if as_text(f.data_type()) => {
                    json_text::to_json_text().call(vec![c]).alias(f.name())
                }
                Some(dt) => cast(c, dt).alias(f.name()),
                None => c,
            }
        })
        .collect();
    Ok(df.select(exprs)?)
}

fn convert_type(dt: &DataType, format: Format) -> Option<DataType> {
    match dt {
        DataType::Timestamp(TimeUnit::Second, tz) if format == Format::Parquet => {
            Some(DataType::Timestamp(TimeUnit::Millisecond, tz.clone()))
        }
        DataType::Dictionary(_, value) => Some(value.as_ref().clone()),
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        _ => None,
    }
}

fn check_target(target: &Path, mode: WriteMode, single: bool) -> Result<()> {
    if let Some(file) = target.ancestors().skip(1).find(|a| a.is_file()) {
        return Err(Error::Config(format!(
            "the output '{}' would be inside '{}', which is a file",
            target.display(),
            file.display()
        )));
    }
    let exists = target.exists();
    match mode {
        WriteMode::Error if exists => Err(Error::OutputExists(target.display().to_string())),
        WriteMode::Append if single && exists => Err(Error::Config(format!(
            "cannot append to the single file '{}': write to a folder",
            target.display()
        ))),
        WriteMode::Append | WriteMode::Overwrite if exists && target.is_file() != single => {
            Err(Error::Config(format!(
                "'{}' is a {} but the output is a {}",
                target.display(),
                if target.is_file() { "file" } else { "folder" },
                if single { "file" } else { "folder" }
            )))
        }
        _ => Ok(()),
    }
}

/// Reads the `_SUCCESS` manifest of an output folder.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    Manifest::read(dir)
}
