//! A job: read the inputs, run SQL steps, write the output, and report.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::ObjectStore;
use datafusion::prelude::{DataFrame, SessionContext};

use crate::context;
use crate::enrich::{EnrichDef, EnrichSpec, Enricher};
use crate::error::{Error, Result};
pub use crate::function::BatchFn;
use crate::lookup::{Lookup, LookupDef, LookupSpec};
use crate::report::{scan_partitions, FileReport, Progress, Report};
use crate::services::Services;
use crate::sink::{self, SinkOptions};
use crate::source::{ReadOptions, Source};
use crate::stage::{StageDef, StageNode};
use crate::stage_spec::StageSpec;
use crate::storage::counting::CountingStore;

/// One SQL step. The table `source` is the output of the step before it (the read for the
/// first step); a step with a `name` can also be referred to by that name later.
#[derive(Debug, Clone, Default)]
pub struct Transform {
    /// Optional name of this step's result.
    pub name: Option<String>,
    /// A `SELECT` statement in DataFusion's SQL dialect.
    pub sql: String,
}

/// One stage after the read. Stages run in order; each sees the previous one's output as
/// the table `source`, and any earlier named stage by its name.
#[derive(Debug, Clone)]
pub enum Stage {
    /// A SQL step.
    Sql(Transform),
    /// Calls to an HTTP API, adding the extracted columns.
    Enrich(Box<EnrichSpec>),
    /// A broadcast lookup, adding columns of a small table by key.
    Lookup(Box<LookupSpec>),
    /// A Rust function over each batch (library API only).
    Batches(BatchFn),
}

impl Stage {
    /// True when the stage may send rows to the rejects dataset after the read (an enrich
    /// stage with `on_error = "reject"`, a lookup with `on_missing = "reject"`).
    fn may_reject(&self) -> bool {
        let mode = |m: &Option<String>| m.as_deref().map(str::to_ascii_lowercase);
        match self {
            Stage::Enrich(e) => {
                !matches!(mode(&e.on_error).as_deref(), Some("null") | Some("fail"))
            }
            Stage::Lookup(l) => mode(&l.on_missing).as_deref() == Some("reject"),
            Stage::Sql(_) | Stage::Batches(_) => false,
        }
    }
}

/// True when the rows should carry their origin from the scan (see
/// [`crate::ledger::origin`]): a stage that may reject rows comes before any SQL step or
/// batch function (which take the origin columns off).
pub fn rows_need_origin(stages: &[Stage]) -> bool {
    stages
        .iter()
        .take_while(|s| matches!(s, Stage::Enrich(_) | Stage::Lookup(_)))
        .any(Stage::may_reject)
}

/// A complete job: source, stages, sink.
#[derive(Debug, Clone)]
pub struct Job {
    /// Scalar functions the SQL steps may call.
    pub udfs: Vec<datafusion::logical_expr::ScalarUDF>,
    /// What to read.
    pub source: ReadOptions,
    /// Stages (SQL steps, enrich stages), in order.
    pub stages: Vec<Stage>,
    /// Where to write.
    pub sink: SinkOptions,
    /// Threads (and partitions) to use.
    pub threads: usize,
    /// Run on this cluster instead of here (see [`crate::cluster`]).
    pub cluster: Option<crate::cluster::SchedulerUrl>,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            udfs: Vec::new(),
            source: ReadOptions::default(),
            stages: Vec::new(),
            sink: SinkOptions::default(),
            threads: crate::context::default_threads(),
            cluster: None,
        }
    }
}

/// The name of the table holding the previous stage's output in SQL steps.
pub const SOURCE_TABLE: &str = "source";

impl Job {
    /// Runs the job to completion and returns its report.
    pub async fn run(&self, progress: &Progress) -> Result<Report> {
        let started = Instant::now();
        if self.threads == 0 {
            return Err(Error::Config("threads must be at least 1".into()));
        }
        let (ctx, stages) = match &self.cluster {
            None => (
                context::session_with(self.threads, self.source.split_min_size),
                self.stages.clone(),
            ),
            Some(_) => {
                let ctx = crate::cluster::client_session(self.threads, self.source.split_min_size);
                let stages = cluster_stages(&self.stages)?;
                // The executors open remote inputs, lookups and outputs with the options
                // that are not secrets, and their own credentials.
                let mut storage = self.source.storage.clone();
                storage.extend(self.sink.storage.clone());
                for stage in &stages {
                    if let Stage::Lookup(l) = stage {
                        storage.extend(l.storage.clone());
                    }
                }
                crate::cluster::share_storage(&ctx, &storage)?;
                (ctx, stages)
            }
        };
        for udf in &self.udfs {
            ctx.register_udf(udf.clone());
        }
        let local: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
        ctx.register_object_store(
            ObjectStoreUrl::local_filesystem().as_ref(),
            Arc::new(CountingStore::new(local, Arc::clone(&progress.read))),
        );
        // Remote stores count their reads for the progress display too.
        for p in &self.source.paths {
            if crate::storage::stores::is_remote(p) {
                crate::storage::stores::ensure_store(
                    &ctx,
                    p,
                    &self.source.storage,
                    Some(&progress.read),
                )?;
            }
        }
        if self.cluster.is_some() && self.source.paths.iter().any(|p| crate::db::is_database(p)) {
            return Err(Error::Config(
                "a database source is read here, not on a cluster (yet): run the job without \
                 --cluster"
                    .into(),
            ));
        }
        let source = Source::open(&ctx, self.source.clone()).await?;
        check_not_reading_output(&source, &self.sink)?;
        let sizes = source
            .files
            .iter()
            .map(|f| Ok((crate::source::infer::store_path(&f.input)?, f.input.size)))
            .collect::<Result<_>>()?;
        let _ = progress.files.set(sizes);
        progress.read.reset();
        progress
            .files_total
            .store(source.files.len() as u64, Ordering::Relaxed);
        progress
            .bytes_total
            .store(source.total_bytes(), Ordering::Relaxed);
        let Applied {
            df,
            enrichers,
            lookups,
        } = apply_stages_spread(
            &ctx,
            if rows_need_origin(&stages) {
                source.to_dataframe_with_origin(&ctx)?
            } else {
                source.to_dataframe(&ctx)?
            },
            &stages,
            &source.rejects,
            self.cluster.is_some(),
        )
        .await?;
        if let Ok(mut list) = progress.enrich.lock() {
            *list = enrichers.iter().map(|e| Arc::clone(&e.stats)).collect();
        }
        // However the job ends (an error, or the caller dropping it), no call goes out after.
        let _stop = StopCalls(enrichers.clone());
        let (written, plan) = match sink::write(
            df,
            &self.sink,
            self.threads,
            Arc::clone(&progress.write),
            Some(&source.rejects),
            self.cluster.as_ref(),
        )
        .await
        {
            Ok(done) => done,
            // Scan errors name their file (and line) already (`--on-error fail`).
            Err(Error::Engine(e)) => return Err(own_error(&e).unwrap_or(Error::Engine(e))),
            Err(e) => return Err(e),
        };
        let books = written
            .books
            .ok_or_else(|| Error::Ledger("the books were not closed before the commit".into()))?;
        let later = source.rejects.rejected_later();
        let at_write = source.rejects.rejected_at_write();
        let files_failed = source.rejects.failed();
        let remote = Services::of(&ctx.copied_config())?.cluster_reports();
        Ok(Report {
            rows_unread: files_failed.iter().filter_map(|f| f.rows_unread()).sum(),
            files_read: source.files.len() as u64,
            tables_read: source.database.iter().map(|r| r.display.clone()).collect(),
            bytes_read: source.total_bytes(),
            rows_in: books.rows_in,
            rows_out: written.rows,
            rows_rejected: books.rejected,
            rows_skipped: books.skipped,
            rejects_path: (books.rejected > 0).then(|| rejects_path(&self.sink)),
            dialects: source
                .files
                .iter()
                .filter_map(|f| {
                    let d = f.dialect.as_ref()?;
                    Some(crate::report::DialectReport {
                        file: f.input.display.clone(),
                        dialect: d.describe(),
                        doubt: d.doubt.clone(),
                    })
                })
                .collect(),
            files: source
                .rejects
                .per_file()
                .into_iter()
                .map(|(file, c)| FileReport {
                    file,
                    rows_in: c.rows_in,
                    rows_ok: c.rows_ok,
                    rows_rejected: c.rows_rejected,
                    rows_skipped: c.rows_skipped,
                })
                .collect(),
            rows_rejected_by_enrich: later,
            rows_rejected_at_write: at_write,
            rows_added_by_sql: books.added,
            rows_removed_by_sql: books.removed,
            enrich: {
                let here = enrichers.iter().map(|e| e.stats.report(e.limiter.limit()));
                match &remote {
                    // On a cluster the calls were made by the executors' tasks: their
                    // reports add up per stage.
                    Some(reports) => here
                        .map(|h| {
                            let mut sum = crate::enrich::EnrichReport {
                                name: h.name,
                                ..Default::default()
                            };
                            for task in tagged::<crate::enrich::EnrichReport>(reports, "enrich") {
                                if task.name == sum.name {
                                    sum.add(&task);
                                }
                            }
                            sum
                        })
                        .collect(),
                    None => here.collect(),
                }
            },
            lookups: lookups
                .iter()
                .map(|l| {
                    let mut report = l.report(&progress.read);
                    if let Some(reports) = &remote {
                        // The rows were matched by the executors' tasks.
                        report.matched = 0;
                        report.missing = 0;
                        report.unconvertible = 0;
                        for task in tagged::<crate::lookup::LookupReport>(reports, "lookup") {
                            if task.name == report.name {
                                report.add_matches(&task);
                            }
                        }
                    }
                    report
                })
                .collect(),
            files_written: written.files.len() as u64,
            bytes_written: written.bytes,
            seconds: started.elapsed().as_secs_f64(),
            output: self.sink.shown(),
            output_format: self.sink.resolved_format().to_string(),
            schema_decisions: source.decisions.clone(),
            skipped_files: source.skipped.clone(),
            files_failed,
            unsplit_files: source
                .unsplit
                .lock()
                .map(|names| names.clone())
                .unwrap_or_default(),
            threads: self.threads,
            input_partitions: scan_partitions(&plan),
        })
    }
}

/// The reports of kind `kind` among a cluster job's stage reports (`{"KIND": {...}}`).
fn tagged<T: serde::de::DeserializeOwned>(reports: &[serde_json::Value], kind: &str) -> Vec<T> {
    reports
        .iter()
        .filter_map(|r| r.get(kind))
        .filter_map(|r| serde_json::from_value(r.clone()).ok())
        .collect()
}

/// Stops the enrich stages' call tasks when dropped.
struct StopCalls(Vec<Arc<Enricher>>);

impl Drop for StopCalls {
    fn drop(&mut self) {
        for e in &self.0 {
            e.stop();
        }
    }
}

/// The output over `input` of the stage `spec` describes, built in the session of `ctx`
/// (whose services are `services`) and kept there under a fresh id.
async fn as_stage(
    ctx: &SessionContext,
    services: &Services,
    input: DataFrame,
    spec: StageSpec,
) -> Result<(DataFrame, Arc<dyn StageDef>)> {
    let id = crate::services::next_id();
    let def = services.stage_or_build(id, spec.build(ctx)).await?;
    let (_, plan) = input.into_parts();
    let node = StageNode::try_new(plan, id, Arc::clone(&def))?;
    Ok((DataFrame::new(ctx.state(), node.into_plan()), def))
}

/// The stages applied: the final DataFrame, and the enrich callers and loaded lookups (for
/// their reports).
#[derive(Debug)]
pub struct Applied {
    /// The output of the last stage.
    pub df: DataFrame,
    /// The enrich stages, in order.
    pub enrichers: Vec<Arc<Enricher>>,
    /// The lookups, in order.
    pub lookups: Vec<Arc<Lookup>>,
}

/// Runs the stages in order on `df`: before each, the previous output is registered as
/// `source`; a named stage is also registered under its name.
pub async fn apply_stages(
    ctx: &SessionContext,
    df: DataFrame,
    stages: &[Stage],
    rejects: &Arc<crate::ledger::rejects::Rejects>,
) -> Result<Applied> {
    apply_stages_spread(ctx, df, stages, rejects, false).await
}

/// [`apply_stages`]; with `spread`, the rows reach each enrich stage hash-partitioned by its
/// key (the stage requires it of its input, and DataFusion's planner repartitions), so
/// that on a cluster each key lives in exactly one task: one call per distinct key across
/// the cluster.
pub async fn apply_stages_spread(
    ctx: &SessionContext,
    df: DataFrame,
    stages: &[Stage],
    rejects: &Arc<crate::ledger::rejects::Rejects>,
    spread: bool,
) -> Result<Applied> {
    let services = Services::of(&ctx.copied_config())?;
    // The stages' rejected rows go to the read's books.
    services.keep_books(rejects);
    let mut current = df;
    let mut enrichers = Vec::new();
    let mut lookups = Vec::new();
    let mut sql_steps = 0;
    for stage in stages {
        // Rows' origin columns reach the stages that may reject rows, and nothing else.
        let visible = crate::ledger::origin::strip(current.clone())?;
        ctx.deregister_table(SOURCE_TABLE)?;
        ctx.register_table(SOURCE_TABLE, visible.clone().into_view())?;
        let name = match stage {
            Stage::Sql(step) => {
                sql_steps += 1;
                let label = step
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("transform #{sql_steps}"));
                current = ctx.sql(&step.sql).await.map_err(|e| {
                    Error::Config(format!(
                        "{label}: {} (in: {})",
                        crate::source::infer::clean_engine_error(&e),
                        step.sql.trim()
                    ))
                })?;
                step.name.clone()
            }
            Stage::Enrich(spec) => {
                let books = rejects.books();
                let spec = StageSpec::Enrich {
                    storage: spec.storage.clone(),
                    spec: spec.clone(),
                    books,
                    by_key: spread,
                };
                let (df, def) = as_stage(ctx, &services, current, spec).await?;
                current = df;
                if let Some(e) = def.as_any().downcast_ref::<EnrichDef>() {
                    enrichers.push(Arc::clone(e.enricher()));
                }
                Some(def.name().to_string())
            }
            Stage::Lookup(spec) => {
                let books = rejects.books();
                let spec = StageSpec::Lookup {
                    spec: spec.clone(),
                    storage: spec.storage.clone(),
                    books,
                };
                let (df, def) = as_stage(ctx, &services, current, spec).await?;
                current = df;
                if let Some(l) = def.as_any().downcast_ref::<LookupDef>() {
                    lookups.push(Arc::clone(l.lookup()));
                }
                Some(def.name().to_string())
            }
            Stage::Batches(f) => {
                services.register_function(f)?;
                let spec = StageSpec::Function {
                    name: f.name.clone(),
                };
                current = as_stage(ctx, &services, visible, spec).await?.0;
                Some(f.name.clone())
            }
        };
        if let Some(name) = name {
            ctx.deregister_table(name.as_str())?;
            let view = crate::ledger::origin::strip(current.clone())?.into_view();
            ctx.register_table(name.as_str(), view)?;
        }
    }
    Ok(Applied {
        df: crate::ledger::origin::strip(current)?,
        enrichers,
        lookups,
    })
}

/// The stages as a cluster runs them: each enrich stage's cache folder as a whole path (its
/// limits are divided among its tasks once the plan is known:
/// [`crate::cluster::split_stage_limits`]). A Rust batch function runs on executors that
/// registered it under its name ([`crate::cluster::ExecutorOptions::functions`]).
fn cluster_stages(stages: &[Stage]) -> Result<Vec<Stage>> {
    stages
        .iter()
        .map(|stage| match stage {
            Stage::Enrich(e) => {
                let mut e = (**e).clone();
                e.cache = e
                    .cache
                    .map(|c| {
                        if crate::storage::stores::is_remote(&c) {
                            return Ok(c);
                        }
                        std::path::absolute(&c)
                            .map(|p| p.display().to_string())
                            .map_err(|err| Error::io(c, err))
                    })
                    .transpose()?;
                Ok(Stage::Enrich(Box::new(e)))
            }
            Stage::Lookup(l) if l.paths.iter().any(|p| crate::db::is_database(p)) => {
                Err(Error::Config(format!(
                    "lookup '{}' reads a database, which a cluster does not yet: run the job \
                     without --cluster",
                    l.name
                )))
            }
            other => Ok(other.clone()),
        })
        .collect()
}

/// Refuses an output that would overwrite or swallow its own inputs.
fn check_not_reading_output(source: &Source, sink: &SinkOptions) -> Result<()> {
    let target = std::path::Path::new(&sink.path);
    let Ok(target) = std::fs::canonicalize(target) else {
        return Ok(()); // does not exist yet: cannot hold inputs
    };
    if let Some(f) = source
        .files
        .iter()
        .find(|f| !f.input.is_remote() && f.input.path.starts_with(&target))
    {
        return Err(Error::Config(format!(
            "the output '{}' holds the input '{}': write somewhere else",
            sink.path, f.input.display
        )));
    }
    Ok(())
}

/// A bad row, a failed API call or a broken file that stopped the job, taken out of the
/// engine's wrapping.
fn own_error(e: &datafusion::error::DataFusionError) -> Option<Error> {
    match e.find_root() {
        datafusion::error::DataFusionError::External(inner) => {
            match inner.downcast_ref::<Error>() {
                Some(Error::BadRow(msg)) => Some(Error::BadRow(msg.clone())),
                Some(Error::Api(msg)) => Some(Error::Api(msg.clone())),
                Some(Error::File { file, reason }) => Some(Error::file(file, reason)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Where rejected rows end up for a sink.
fn rejects_path(sink: &SinkOptions) -> String {
    if sink.is_database() {
        sink.database_rejects()
    } else if let Some(path) = &sink.rejects {
        path.clone()
    } else if sink.single_file_target() {
        format!("{}{}", sink.path, crate::sink::commit::REJECTS_DIR)
    } else {
        std::path::Path::new(&sink.path)
            .join(crate::sink::commit::REJECTS_DIR)
            .display()
            .to_string()
    }
}
