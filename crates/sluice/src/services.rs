//! The session-level services sluice's plan nodes use when they run.
//!
//! Plan nodes hold only configuration and ids (what could be written down and sent to
//! another process); what runs — the rejects writer and row ledger of each read, each
//! stage's loaded lookup, HTTP client or function — lives here, in an extension of the
//! DataFusion session ([`SessionConfig::with_extension`]), and a node's `execute` fetches it
//! from its [`TaskContext`]. Where a plan runs in another process, that process builds these
//! services from the job's configuration.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::config::SessionConfig;
use datafusion::execution::TaskContext;

use crate::function::BatchFn;
use crate::ledger::rejects::Rejects;
use crate::ledger::WriteProgress;
use crate::stage::StageDef;

/// sluice's settings that travel with a job's session to a cluster's processes (as
/// `sluice.*` keys: Ballista sends a session's options by their full keys).
#[derive(Debug, Clone, Default)]
pub struct SluiceOptions {
    /// Where each read's rejected rows go, as JSON `{"ID": "DIR"}` by books id: the
    /// client's rejects folders (on storage every executor shares).
    pub rejects_dirs: String,
    /// Where each task leaves its ledger (see [`crate::ledger::remote`]): a folder of the
    /// client's, on storage every executor shares. Empty: not a sluice job.
    pub ledger_dir: String,
    /// The job's storage options that are not secrets, as JSON (endpoint, region...: see
    /// [`crate::cluster::stores::shareable`]); executors take credentials from their own
    /// environment.
    pub storage: String,
    /// What every executor running a task of the job must see before it reads a row, as
    /// JSON (see [`crate::cluster::reach::Reach`]). Empty: nothing to check.
    pub reach: String,
    /// An object-store prefix where each task, once it has succeeded, uploads its ledger
    /// and rejects files (written locally first): a job whose output is on an object store
    /// and whose executors share no folder. Empty: the ledger folder is shared.
    pub remote_books: String,
}

impl SluiceOptions {
    /// The options a job's session carries, if any.
    pub fn of(config: &SessionConfig) -> Option<&SluiceOptions> {
        config.options().extensions.get::<SluiceOptions>()
    }

    /// The job's shareable storage options ([`SluiceOptions::storage`]), read back.
    pub fn storage_options(config: &SessionConfig) -> crate::storage::stores::StorageOptions {
        SluiceOptions::of(config)
            .and_then(|o| serde_json::from_str(&o.storage).ok())
            .unwrap_or_default()
    }
}

impl datafusion::config::ExtensionOptions for SluiceOptions {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn datafusion::config::ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "rejects_dirs" => {
                self.rejects_dirs = value.to_string();
                Ok(())
            }
            "ledger_dir" => {
                self.ledger_dir = value.to_string();
                Ok(())
            }
            "storage" => {
                self.storage = value.to_string();
                Ok(())
            }
            "reach" => {
                self.reach = value.to_string();
                Ok(())
            }
            "remote_books" => {
                self.remote_books = value.to_string();
                Ok(())
            }
            other => Err(DataFusionError::Configuration(format!(
                "no sluice setting '{other}'"
            ))),
        }
    }

    fn entries(&self) -> Vec<datafusion::config::ConfigEntry> {
        vec![
            datafusion::config::ConfigEntry {
                key: "sluice.rejects_dirs".into(),
                value: Some(self.rejects_dirs.clone()),
                description: "each read's rejects folder, as JSON by books id",
            },
            datafusion::config::ConfigEntry {
                key: "sluice.ledger_dir".into(),
                value: Some(self.ledger_dir.clone()),
                description: "where a cluster's tasks leave their ledgers",
            },
            datafusion::config::ConfigEntry {
                key: "sluice.storage".into(),
                value: Some(self.storage.clone()),
                description: "the job's storage options that are not secrets, as JSON",
            },
            datafusion::config::ConfigEntry {
                key: "sluice.reach".into(),
                value: Some(self.reach.clone()),
                description: "what every executor must see of a job's inputs and outputs",
            },
            datafusion::config::ConfigEntry {
                key: "sluice.remote_books".into(),
                value: Some(self.remote_books.clone()),
                description: "where a cluster's tasks upload their ledgers and rejects",
            },
        ]
    }
}

impl datafusion::config::ConfigExtension for SluiceOptions {
    const PREFIX: &'static str = "sluice";
}

/// A stage built once per session, however many partitions ask for it at once.
type StageCell = Arc<tokio::sync::OnceCell<Arc<dyn StageDef>>>;

/// A fresh id for a plan node, a set of books or a stage, unique in the process.
pub fn next_id() -> u64 {
    crate::plan::next_id()
}

/// What plan nodes find in their session: each read's rejects and ledger (by books id),
/// each stage (by stage id) and the batch functions (by name).
#[derive(Debug, Default)]
pub struct Services {
    books: RwLock<HashMap<u64, Arc<Rejects>>>,
    stages: RwLock<HashMap<u64, StageCell>>,
    functions: RwLock<HashMap<String, BatchFn>>,
    progress: RwLock<HashMap<u64, Arc<WriteProgress>>>,
    /// A cluster process (scheduler, executor): a read's books are made on first use.
    remote: bool,
    /// In an executor: the task these services are the session of.
    task: RwLock<Option<ClusterTask>>,
    /// In a cluster job's client: what the tasks' stages reported, as JSON.
    cluster_reports: RwLock<Option<Vec<serde_json::Value>>>,
    /// Each database read's connector (by books id): it holds the read's snapshot and its
    /// password, so it is the session's, never a plan's.
    connectors: RwLock<HashMap<u64, Arc<crate::db::postgres::Connector>>>,
}

/// The task of a cluster's job a session runs (an executor makes a session per task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTask {
    /// The job's stage.
    pub stage: usize,
    /// Ballista's task id.
    pub task: usize,
    /// The stage's output partitions the task makes, in the order of its plan's partitions.
    pub partitions: Vec<usize>,
}

impl ClusterTask {
    /// The name of the task's files (its rejects file).
    pub fn label(&self) -> String {
        format!("stage-{}-task-{}", self.stage, self.task)
    }
}

impl Services {
    /// The services of a session built by [`crate::context::session`].
    pub fn of(config: &SessionConfig) -> Result<Arc<Services>> {
        config.get_extension::<Services>().ok_or_else(|| {
            DataFusionError::Plan(
                "sluice's plan nodes run only in a session made by sluice::context::session".into(),
            )
        })
    }

    /// The services of the session a task runs in.
    pub fn of_task(context: &TaskContext) -> Result<Arc<Services>> {
        Services::of(context.session_config())
    }

    /// Makes `rejects` available under its id (again: a no-op).
    pub fn keep_books(&self, rejects: &Arc<Rejects>) {
        if let Ok(mut books) = self.books.write() {
            books
                .entry(rejects.id())
                .or_insert_with(|| Arc::clone(rejects));
        }
    }

    /// Makes the connector of the database read counted in books `id` available.
    pub fn keep_connector(&self, id: u64, connector: Arc<crate::db::postgres::Connector>) {
        if let Ok(mut c) = self.connectors.write() {
            c.insert(id, connector);
        }
    }

    /// The connector of the database read counted in books `id`.
    pub fn connector(&self, id: u64) -> Option<Arc<crate::db::postgres::Connector>> {
        self.connectors.read().ok()?.get(&id).cloned()
    }

    /// The services of a cluster's scheduler or executor: the books a task's plan names are
    /// made there on first use, in the plan's mode (see [`Self::books_for`]).
    pub fn remote() -> Services {
        Services {
            remote: true,
            ..Services::default()
        }
    }

    /// The rejects and ledger `books` names: in a cluster process, made on first use, with
    /// the rejects folder the job's `config` gives for them ([`SluiceOptions`]).
    pub fn books_for(
        &self,
        books: &crate::ledger::rejects::BooksRef,
        config: &SessionConfig,
    ) -> Result<Arc<Rejects>> {
        if self.remote {
            let dir = SluiceOptions::of(config)
                .and_then(|o| serde_json::from_str::<HashMap<String, String>>(&o.rejects_dirs).ok())
                .and_then(|dirs| dirs.get(&books.id.to_string()).cloned())
                .map(std::path::PathBuf::from);
            let label = self
                .cluster_task()
                .map(|t| t.label())
                .unwrap_or_else(|| format!("session-{}", next_id()));
            if let Ok(mut all) = self.books.write() {
                let rejects = all.entry(books.id).or_insert_with(|| {
                    Arc::new(Rejects::on_executor(books.id, books.mode, dir, label))
                });
                return Ok(Arc::clone(rejects));
            }
        }
        self.books(books.id)
    }

    /// Keeps what a cluster job's tasks' stages reported (see [`crate::cluster::absorb`]).
    pub fn keep_cluster_reports(&self, reports: Vec<serde_json::Value>) {
        if let Ok(mut r) = self.cluster_reports.write() {
            *r = Some(reports);
        }
    }

    /// What a cluster job's tasks' stages reported, one JSON report per stage and task
    /// (none before the job ran on a cluster).
    pub fn cluster_reports(&self) -> Option<Vec<serde_json::Value>> {
        self.cluster_reports.read().ok().and_then(|r| r.clone())
    }

    /// The stages this session has built.
    pub fn built_stages(&self) -> Vec<Arc<dyn StageDef>> {
        self.stages
            .read()
            .map(|s| s.values().filter_map(|c| c.get().cloned()).collect())
            .unwrap_or_default()
    }

    /// Every read's books this session holds.
    pub fn all_books(&self) -> Vec<Arc<Rejects>> {
        self.books
            .read()
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default()
    }

    /// In an executor: these services are the session of `task`.
    pub fn set_cluster_task(&self, task: ClusterTask) {
        if let Ok(mut t) = self.task.write() {
            *t = Some(task);
        }
    }

    /// The cluster task these services are the session of, if any.
    pub fn cluster_task(&self) -> Option<ClusterTask> {
        self.task.read().ok().and_then(|t| t.clone())
    }

    /// Partition `local` of a plan of `count` partitions in this session, as a partition
    /// of the whole stage: in a cluster's task that makes `count` of the stage's output
    /// partitions, the one it makes in that place; elsewhere `local` itself.
    pub fn stage_partition(&self, local: usize, count: usize) -> usize {
        match self.cluster_task() {
            Some(t) if t.partitions.len() == count => t.partitions[local],
            _ => local,
        }
    }

    /// The rejects and ledger of books `id`.
    pub fn books(&self, id: u64) -> Result<Arc<Rejects>> {
        self.books
            .read()
            .ok()
            .and_then(|b| b.get(&id).cloned())
            .ok_or_else(|| DataFusionError::Internal(format!("no books {id} in this session")))
    }

    fn stage_cell(&self, id: u64) -> StageCell {
        if let Some(cell) = self.stages.read().ok().and_then(|s| s.get(&id).cloned()) {
            return cell;
        }
        match self.stages.write() {
            Ok(mut stages) => Arc::clone(stages.entry(id).or_default()),
            Err(_) => StageCell::default(),
        }
    }

    /// Makes stage `def` available under `id` (again: a no-op).
    pub fn keep_stage(&self, id: u64, def: &Arc<dyn StageDef>) {
        let _ = self.stage_cell(id).set(Arc::clone(def));
    }

    /// Stage `id`, when it was built in this session.
    pub fn stage(&self, id: u64) -> Result<Arc<dyn StageDef>> {
        self.stages
            .read()
            .ok()
            .and_then(|s| s.get(&id).and_then(|cell| cell.get().cloned()))
            .ok_or_else(|| DataFusionError::Internal(format!("no stage {id} in this session")))
    }

    /// Stage `id`, built by `build` the first time any partition of the session asks for it
    /// (the others wait for that build).
    pub async fn stage_or_build<F>(
        &self,
        id: u64,
        build: F,
    ) -> crate::error::Result<Arc<dyn StageDef>>
    where
        F: std::future::Future<Output = crate::error::Result<Arc<dyn StageDef>>>,
    {
        self.stage_cell(id).get_or_try_init(|| build).await.cloned()
    }

    /// Registers batch function `f` under its name. The same function again is a no-op;
    /// another function under a taken name is an error (a plan names functions only).
    pub fn register_function(&self, f: &BatchFn) -> crate::error::Result<()> {
        let mut all = self
            .functions
            .write()
            .map_err(|_| crate::error::Error::Config("function registry poisoned".into()))?;
        match all.get(&f.name) {
            Some(known) if !Arc::ptr_eq(&known.f, &f.f) => {
                Err(crate::error::Error::Config(format!(
                    "two batch functions are named '{}': give each its own name",
                    f.name
                )))
            }
            Some(_) => Ok(()),
            None => {
                all.insert(f.name.clone(), f.clone());
                Ok(())
            }
        }
    }

    /// The batch function registered as `name`.
    pub fn function(&self, name: &str) -> crate::error::Result<BatchFn> {
        let all = self
            .functions
            .read()
            .map_err(|_| crate::error::Error::Config("function registry poisoned".into()))?;
        all.get(name).cloned().ok_or_else(|| {
            let mut known: Vec<&str> = all.keys().map(String::as_str).collect();
            known.sort_unstable();
            crate::error::Error::Config(format!(
                "no batch function '{name}' is registered in this session (registered: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// Makes a write progress counter available; returns its id.
    pub fn keep_write_progress(&self, progress: &Arc<WriteProgress>) -> u64 {
        let id = next_id();
        if let Ok(mut all) = self.progress.write() {
            all.insert(id, Arc::clone(progress));
        }
        id
    }

    /// Write progress counter `id` (a fresh one nobody reads when it is not here: progress
    /// is for display only).
    pub fn write_progress(&self, id: u64) -> Arc<WriteProgress> {
        self.progress
            .read()
            .ok()
            .and_then(|p| p.get(&id).cloned())
            .unwrap_or_default()
    }
}
