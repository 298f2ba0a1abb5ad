//! The session-level services sluice's plan nodes use when they run.
//!
//! Plan nodes hold only configuration and ids (what could be written down and sent to
//! another process); what runs — the rejects writer and row ledger of each read, each
//! stage's loaded lookup, HTTP client or function — lives here, in an extension of the
//! DataFusion session ([`SessionConfig::with_extension`]), and a node's `execute` fetches it
//! from its [`TaskContext`]. Where a plan runs in another process, that process builds these
//! services from the job's configuration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::config::SessionConfig;
use datafusion::execution::TaskContext;

use crate::ledger::rejects::Rejects;
use crate::sink::WriteProgress;
use crate::stage::StageDef;

/// Ids for books and stages, unique in the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh id for a set of books or a stage.
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// What plan nodes find in their session: each read's rejects and ledger (by books id) and
/// each stage (by stage id).
#[derive(Debug, Default)]
pub struct Services {
    books: RwLock<HashMap<u64, Arc<Rejects>>>,
    stages: RwLock<HashMap<u64, Arc<dyn StageDef>>>,
    progress: RwLock<HashMap<u64, Arc<WriteProgress>>>,
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

    /// The rejects and ledger of books `id`.
    pub fn books(&self, id: u64) -> Result<Arc<Rejects>> {
        self.books
            .read()
            .ok()
            .and_then(|b| b.get(&id).cloned())
            .ok_or_else(|| DataFusionError::Internal(format!("no books {id} in this session")))
    }

    /// Makes stage `def` available under `id` (again: a no-op).
    pub fn keep_stage(&self, id: u64, def: &Arc<dyn StageDef>) {
        if let Ok(mut stages) = self.stages.write() {
            stages.entry(id).or_insert_with(|| Arc::clone(def));
        }
    }

    /// Stage `id`.
    pub fn stage(&self, id: u64) -> Result<Arc<dyn StageDef>> {
        self.stages
            .read()
            .ok()
            .and_then(|s| s.get(&id).cloned())
            .ok_or_else(|| DataFusionError::Internal(format!("no stage {id} in this session")))
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
