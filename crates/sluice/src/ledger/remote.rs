//! The books of tasks that ran in other processes (a cluster's executors), carried back as
//! data.
//!
//! An executor's task writes its rejected rows to its own file in the read's rejects folder
//! (shared storage), as a local task does, and when it ends it writes what it counted next
//! to it: `.task-NODE-PARTITION.ledger.json`, holding each range it read with its counts
//! (records framed, rows passed on, rejected, skipped), what it read of columnar files
//! (footer rows, parts) and the files that broke. A retried task writes the same names
//! again, so its last run is what counts. The client reads them all into its own books
//! ([`super::rejects::Rejects::absorb`]) before it checks and reports them, and joins the
//! tasks' rejects files with its own.

use serde::{Deserialize, Serialize};

use super::rejects::{FailedFile, Task};
use super::RangeCounts;

/// What one task read and counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskLedger {
    /// The task (global: its scan node and the partition of the whole scan).
    pub task: (u64, usize),
    /// It wrote rejected rows to its file.
    pub rejects: bool,
    /// Each range read: file, first byte, scan node, counts.
    pub ranges: Vec<(String, u64, u64, RangeCounts)>,
    /// Each columnar part read to its end: file, first byte, scan node, footer rows, parts.
    pub columnar: Vec<(String, u64, u64, u64, usize)>,
    /// Files that broke while read.
    pub failed: Vec<FailedFile>,
}

impl TaskLedger {
    /// The task it is the ledger of.
    pub fn task(&self) -> Task {
        Task {
            node: self.task.0,
            partition: self.task.1,
        }
    }
}

/// The ledger file of `task` in the rejects folder `dir`.
pub fn ledger_file(dir: &std::path::Path, task: Task) -> std::path::PathBuf {
    dir.join(format!(
        ".task-{}-{}.ledger.json",
        task.node, task.partition
    ))
}

/// True for the name of a task's ledger file.
pub fn is_ledger_file(name: &str) -> bool {
    name.starts_with(".task-") && name.ends_with(".ledger.json")
}
