//! The executors' half of a job's books: every task a sluice executor runs leaves what it
//! counted and rejected where the client can read it back.
//!
//! Ballista runs a task by wrapping its stage's plan in a shuffle writer and driving it (an
//! [`ExecutionEngine`]). sluice's engine ([`SluiceEngine`]) runs it through Ballista's own
//! ([`DefaultExecutionEngine`]) with one node slipped under the shuffle writer
//! ([`StageRoot`]) that keeps hold of the plan as the task really ran it, and tells the
//! task's session which task it is (so a write names its files after the stage's
//! partitions, and the task's rejected rows go to one file named after it). When the task
//! has succeeded, its ledger ([`TaskLedger`]) goes to the job's ledger folder: the rows its
//! plan's nodes took in and passed on, and what it counted and rejected of each read. A task
//! that fails writes none. The client reads them back ([`crate::ledger::remote::absorb`]).

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ballista_core::execution_plans::ShuffleReaderExec;
use ballista_core::serde::protobuf::{ShuffleWritePartition, TaskColumnStats};
use ballista_core::JobId;
use ballista_executor::execution_engine::{
    DefaultExecutionEngine, ExecutionEngine, QueryStageExecutor,
};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::prelude::SessionConfig;

use crate::cluster::reach::Reach;
use crate::ledger::remote::TaskLedger;
use crate::services::{ClusterTask, Services, SluiceOptions};

/// Ballista's execution engine, with each task of a sluice job keeping its books, run only
/// once the executor has checked that it sees the job's inputs and outputs
/// ([`crate::cluster::reach`]).
pub struct SluiceEngine {
    inner: DefaultExecutionEngine,
    /// How the executor is named in its lines (`HOST:PORT`).
    executor: String,
    checked: Arc<Checked>,
}

impl SluiceEngine {
    /// The engine of the sluice executor named `executor` (`HOST:PORT`) in its lines.
    pub fn new(executor: impl Into<String>) -> Self {
        SluiceEngine {
            inner: DefaultExecutionEngine::new(),
            executor: executor.into(),
            checked: Arc::default(),
        }
    }
}

/// The jobs whose inputs and outputs this executor has found where the client sees them
/// (the latest [`Checked::KEEP`]).
#[derive(Debug, Default)]
struct Checked(Mutex<std::collections::VecDeque<String>>);

impl Checked {
    const KEEP: usize = 1024;

    fn has(&self, job: &str) -> bool {
        self.0
            .lock()
            .is_ok_and(|jobs| jobs.iter().any(|j| j == job))
    }

    fn add(&self, job: &str) {
        if let Ok(mut jobs) = self.0.lock() {
            if !jobs.iter().any(|j| j == job) {
                if jobs.len() == Self::KEEP {
                    jobs.pop_front();
                }
                jobs.push_back(job.to_string());
            }
        }
    }
}

impl ExecutionEngine for SluiceEngine {
    fn create_query_stage_exec(
        &self,
        job_id: JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> Result<Arc<dyn QueryStageExecutor>> {
        let options = SluiceOptions::of(config);
        let dir = options
            .map(|o| o.ledger_dir.clone())
            .filter(|d| !d.is_empty());
        let reach = match options.map(|o| o.reach.as_str()).filter(|r| !r.is_empty()) {
            Some(r) => serde_json::from_str(r).map_err(|e| {
                DataFusionError::Internal(format!("the job's sluice.reach is not readable: {e}"))
            })?,
            None => Reach::default(),
        };
        let create = |plan| {
            self.inner.create_query_stage_exec(
                job_id.clone(),
                stage_id,
                task_id,
                global_output_partition_ids.clone(),
                plan,
                work_dir,
                config,
            )
        };
        let (Some(dir), Some(services)) = (dir, config.get_extension::<Services>()) else {
            // Not a sluice job: Ballista's engine as it is.
            return create(plan);
        };
        services.set_cluster_task(ClusterTask {
            stage: stage_id,
            task: task_id,
            partitions: global_output_partition_ids.clone(),
        });
        let child = match plan.children().as_slice() {
            [child] => Arc::clone(child),
            _ => {
                return Err(DataFusionError::Internal(format!(
                    "a stage's plan starts with a shuffle writer of one input, not {}",
                    plan.name()
                )))
            }
        };
        let ran = Arc::new(Mutex::new(None));
        let root: Arc<dyn ExecutionPlan> = Arc::new(StageRoot::new(child, Arc::clone(&ran)));
        let plan = datafusion::physical_plan::replace_children_if_necessary(plan, vec![root])?;
        let inner = create(plan)?;
        Ok(Arc::new(BookedStage {
            inner,
            ran,
            services,
            dir: PathBuf::from(dir),
            stage: stage_id,
            task: task_id,
            job: job_id,
            reach,
            executor: self.executor.clone(),
            checked: Arc::clone(&self.checked),
        }))
    }
}

/// The plan a task ran, as its [`StageRoot`] last saw it.
type Ran = Arc<Mutex<Option<Arc<dyn ExecutionPlan>>>>;

/// A stage's task that writes its ledger once it has succeeded.
#[derive(Debug)]
struct BookedStage {
    inner: Arc<dyn QueryStageExecutor>,
    ran: Ran,
    services: Arc<Services>,
    dir: PathBuf,
    stage: usize,
    task: usize,
    job: JobId,
    /// What the executor must see before the job's first task here reads a row.
    reach: Reach,
    executor: String,
    checked: Arc<Checked>,
}

impl fmt::Display for BookedStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl BookedStage {
    /// The task's ledger, from the plan it ran and its session's books.
    fn ledger(&self) -> Result<TaskLedger> {
        let plan = self
            .ran
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .ok_or_else(|| DataFusionError::Internal("the task's plan was not kept".into()))?;
        let books = self
            .services
            .all_books()
            .iter()
            // A lookup's own read is the task's business: it is not the job's input.
            .filter(|r| r.on_cluster())
            .map(|r| r.task_books())
            .collect::<crate::error::Result<Vec<_>>>()?;
        let mut inputs = BTreeSet::new();
        for b in &books {
            for (file, start, scan, _) in &b.ranges {
                inputs.insert(format!("scan {scan} {file}@{start}"));
            }
            for (file, start, scan, ..) in &b.columnar {
                inputs.insert(format!("scan {scan} {file}@{start}"));
            }
        }
        stage_inputs(&plan, &mut inputs);
        if inputs.is_empty() {
            // Read nothing another run could also read: a task of its own.
            inputs.insert(format!("task {}", self.task));
        }
        Ok(TaskLedger {
            stage: self.stage,
            task: self.task,
            pid: std::process::id(),
            inputs: inputs.into_iter().collect(),
            flow: crate::ledger::stage_flow(&plan),
            books,
            stage_reports: self
                .services
                .built_stages()
                .iter()
                .filter_map(|s| stage_report(s.as_any()))
                .collect(),
        })
    }
}

impl BookedStage {
    /// Runs the task, then writes its ledger (and uploads its books when they go to an
    /// object store).
    async fn run_and_book(
        &self,
        task_id: usize,
        context: &Arc<TaskContext>,
    ) -> Result<Vec<ShuffleWritePartition>> {
        let out = self
            .inner
            .execute_query_stage(task_id, Arc::clone(context))
            .await?;
        let ledger = self.ledger()?;
        let dir = self.dir.clone();
        let ledger = tokio::task::spawn_blocking(move || ledger.write(&dir).map(|()| ledger))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        if let Some(url) = SluiceOptions::of(context.session_config())
            .map(|o| o.remote_books.clone())
            .filter(|u| !u.is_empty())
        {
            self.upload_books(&url, &ledger, context)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
        }
        Ok(out)
    }

    /// After a failed run: deletes the rejects files of its books and its ledger if it was
    /// written (the run counts for nothing; a retry is a task of its own). Best effort: the
    /// task's own error is the one reported.
    fn discard_books(&self) {
        for books in self.services.all_books().iter().filter(|r| r.on_cluster()) {
            if let Err(e) = books.discard_task_file() {
                tracing::warn!("task {}: {e}", self.task);
            }
        }
        let ledger = TaskLedger {
            stage: self.stage,
            task: self.task,
            ..TaskLedger::default()
        };
        let _ = std::fs::remove_file(ledger.path(&self.dir));
    }

    /// Uploads the task's rejects files and then its ledger to `url` (the job's books on an
    /// object store, for executors that share no folder with the client), removing the
    /// local copies. The ledger goes last: a ledger the client finds names files that are
    /// there.
    async fn upload_books(
        &self,
        url: &str,
        ledger: &TaskLedger,
        context: &TaskContext,
    ) -> crate::error::Result<()> {
        let storage = SluiceOptions::storage_options(context.session_config());
        let target = crate::sink::remote::RemoteTarget::open(url, &storage)?;
        let folders: std::collections::HashMap<u64, PathBuf> = self
            .services
            .all_books()
            .iter()
            .filter_map(|r| Some((r.id(), r.folder()?)))
            .collect();
        let mut local = Vec::new();
        for b in &ledger.books {
            if let (Some(name), Some(folder)) = (&b.rejects, folders.get(&b.id)) {
                local.push((folder.join(name), name.clone()));
            }
        }
        local.push((ledger.path(&self.dir), ledger.file_name()));
        for (path, name) in &local {
            target.upload_as(path, name).await?;
        }
        for (path, _) in local {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

/// What a stage a task built reports for the job's report, tagged with its kind:
/// `{"enrich": {...}}` (its calls) or `{"lookup": {...}}` (its matches).
fn stage_report(stage: &dyn std::any::Any) -> Option<serde_json::Value> {
    if let Some(e) = stage.downcast_ref::<crate::enrich::EnrichDef>() {
        let report = e.enricher().stats.report(e.enricher().limiter.limit());
        return Some(serde_json::json!({ "enrich": serde_json::to_value(report).ok()? }));
    }
    if let Some(l) = stage.downcast_ref::<crate::lookup::LookupDef>() {
        let report = l.lookup().report(&Default::default());
        return Some(serde_json::json!({ "lookup": serde_json::to_value(report).ok()? }));
    }
    None
}

/// The other stages' output partitions `plan` reads.
fn stage_inputs(plan: &Arc<dyn ExecutionPlan>, inputs: &mut BTreeSet<String>) {
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        for loc in reader.partition.iter().flatten() {
            inputs.insert(format!(
                "stage {} partition {}",
                loc.partition_id.stage_id, loc.partition_id.partition_id
            ));
        }
    }
    for child in plan.children() {
        stage_inputs(child, inputs);
    }
}

#[async_trait::async_trait]
impl QueryStageExecutor for BookedStage {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<TaskContext>,
    ) -> Result<Vec<ShuffleWritePartition>> {
        if !self.reach.is_empty() && !self.checked.has(self.job.as_str()) {
            self.reach
                .check(&self.executor, &context)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            self.checked.add(self.job.as_str());
        }
        let ran = self.run_and_book(task_id, &context).await;
        if ran.is_err() {
            self.discard_books();
        }
        ran
    }

    fn collect_plan_metrics(&self) -> Vec<MetricsSet> {
        self.inner.collect_plan_metrics()
    }

    fn collect_runtime_stats_reports(
        &self,
    ) -> Vec<ballista_core::serde::protobuf::RuntimeStatsReport> {
        self.inner.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(
        &self,
    ) -> Result<Vec<ballista_core::serde::protobuf::WindowStateReport>> {
        self.inner.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<TaskColumnStats> {
        self.inner.collect_column_stats()
    }
}

/// The top of a stage's plan in a sluice executor's task, under the shuffle writer: passes
/// its input on, and keeps hold of it (as rebuilt by Ballista for the task) so the task's
/// ledger can read the metrics of the plan that ran. Exists only inside an executor; never
/// serialized.
#[derive(Debug)]
pub struct StageRoot {
    input: Arc<dyn ExecutionPlan>,
    ran: Ran,
}

impl StageRoot {
    fn new(input: Arc<dyn ExecutionPlan>, ran: Ran) -> Self {
        if let Ok(mut r) = ran.lock() {
            *r = Some(Arc::clone(&input));
        }
        StageRoot { input, ran }
    }
}

impl DisplayAs for StageRoot {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StageRoot")
    }
}

impl ExecutionPlan for StageRoot {
    fn name(&self) -> &str {
        "StageRoot"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = crate::plan::only_child("StageRoot", children)?;
        Ok(Arc::new(StageRoot::new(input, Arc::clone(&self.ran))))
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
