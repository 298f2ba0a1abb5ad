//! The books of tasks that ran in other processes (a cluster's executors), carried back as
//! data.
//!
//! Each task an executor runs for a sluice job writes, once it has succeeded, one ledger
//! file to the job's ledger folder (on storage the client shares):
//! `.stage-S-task-T.ledger.json`, holding what it read (its identity, see
//! [`TaskLedger::inputs`]), the rows each plan node of its stage took in and passed on
//! ([`PlanFlow`]), and per read: each file range with its counts, the columnar parts read
//! to their end, the files that broke, the rows its stages and writer rejected, and the name
//! of its rejects file. The client reads them all ([`absorb`]) before it checks and reports
//! the books. A task run again (Ballista retries a failed task, or reruns a finished one
//! whose output was lost with its executor) reads the same inputs: of the runs of one
//! stage with the same inputs only the latest counts, and its earlier runs' rejects files
//! are deleted. A failed run writes no ledger, so it never counts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::rejects::{FailedFile, Rejects, Task};
use super::{PlanFlow, RangeCounts};
use crate::error::{Error, Result};

/// What one task of a cluster's job did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskLedger {
    /// The job's stage it belongs to.
    pub stage: usize,
    /// Ballista's task id (higher: bound later).
    pub task: usize,
    /// The executor process that ran it (for people reading the ledger).
    pub pid: u32,
    /// What it read, sorted: `scan SCAN FILE@START` per file range or columnar part, and
    /// `stage S partition P` per partition of another stage's output. Two runs of one task
    /// read the same.
    pub inputs: Vec<String>,
    /// What its plan did to the rows.
    pub flow: PlanFlow,
    /// Per read (books) it touched.
    pub books: Vec<BooksLedger>,
    /// What its stages reported (an enrich stage's calls, for the job's report), as
    /// their reports' JSON.
    #[serde(default)]
    pub stage_reports: Vec<serde_json::Value>,
}

/// What the tasks of a job did, read back from their ledgers.
#[derive(Debug, Clone, Default)]
pub struct Absorbed {
    /// What the plan's nodes did to the rows, over all tasks.
    pub flow: PlanFlow,
    /// The stage reports of the tasks that counted, as JSON (see
    /// [`TaskLedger::stage_reports`]).
    pub stage_reports: Vec<serde_json::Value>,
}

/// What one task counted and rejected of one read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BooksLedger {
    /// The books' id.
    pub id: u64,
    /// Each range read: file, first byte, scan node, counts.
    pub ranges: Vec<(String, u64, u64, RangeCounts)>,
    /// Each columnar part read to its end: file, first byte, scan node, footer rows, parts.
    pub columnar: Vec<(String, u64, u64, u64, usize)>,
    /// Files that broke while read.
    pub failed: Vec<FailedFile>,
    /// Rows its stages rejected.
    pub later: u64,
    /// Rows its writer rejected.
    pub at_write: u64,
    /// Its rejects file, in the read's rejects folder.
    pub rejects: Option<String>,
}

impl TaskLedger {
    /// The ledger's file name.
    pub fn file_name(&self) -> String {
        format!(".stage-{}-task-{}.ledger.json", self.stage, self.task)
    }

    /// The ledger's file in the job's ledger folder `dir`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(self.file_name())
    }

    /// Writes the ledger to `dir` (whole or not at all: written aside, synced, renamed); in
    /// a job's staging folder, never recreating that folder once the job has removed it.
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::storage::manifest::create_job_dir(dir)?;
        let path = self.path(dir);
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec(self).map_err(|e| Error::Ledger(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()
        };
        write().map_err(|e| Error::io(tmp.display().to_string(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(path.display().to_string(), e))
    }
}

/// True for the name of a task's ledger file.
pub fn is_ledger_file(name: &str) -> bool {
    name.starts_with(".stage-") && name.ends_with(".ledger.json")
}

/// Reads the ledgers the job's tasks left in `dir` into the books they name (`books`, by
/// id), the latest run of each task only, and returns the sum of their plans' flows and
/// stage reports. The ledger files are removed, and so are the rejects files of runs that
/// did not count.
pub fn absorb(dir: &Path, books: &HashMap<u64, Arc<Rejects>>) -> Result<Absorbed> {
    let mut absorbed = Absorbed::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(absorbed); // no folder: no task ran
    };
    let mut ledgers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir.display().to_string(), e))?;
        if !is_ledger_file(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let text = std::fs::read(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
        let ledger: TaskLedger = serde_json::from_slice(&text)
            .map_err(|e| Error::Ledger(format!("{}: {e}", path.display())))?;
        ledgers.push(ledger);
    }
    // The runs of each task of each stage, latest first.
    let mut runs: BTreeMap<(usize, Vec<String>), Vec<TaskLedger>> = BTreeMap::new();
    for ledger in ledgers {
        runs.entry((ledger.stage, ledger.inputs.clone()))
            .or_default()
            .push(ledger);
    }
    // Within a stage, two tasks never read the same range of a file: one that does is a
    // run of another task cut differently, which the books cannot tell apart. (Two tasks may
    // read the same partition of another stage: a broadcast join's build side.)
    let mut seen: HashMap<(usize, &str), usize> = HashMap::new();
    for ((stage, inputs), list) in &runs {
        for input in inputs.iter().filter(|i| i.starts_with("scan ")) {
            if let Some(other) = seen.insert((*stage, input.as_str()), list[0].task) {
                return Err(Error::Ledger(format!(
                    "tasks {other} and {} of stage {stage} both read {input}",
                    list[0].task
                )));
            }
        }
    }
    let mut kept = std::collections::HashSet::new();
    for ((stage, _), mut list) in runs {
        list.sort_by_key(|l| std::cmp::Reverse(l.task));
        let mut list = list.into_iter();
        let Some(latest) = list.next() else {
            continue;
        };
        // Earlier runs count for nothing (their rejects files are removed below).
        drop(list);
        absorbed.flow.add(&latest.flow);
        absorbed
            .stage_reports
            .extend(latest.stage_reports.iter().cloned());
        let key = Task {
            node: (1 << 63) | stage as u64,
            partition: latest.task,
        };
        for b in &latest.books {
            if let (Some(name), Some(dir)) = (&b.rejects, books.get(&b.id).and_then(|r| r.folder()))
            {
                kept.insert(dir.join(name));
            }
            let rejects = books.get(&b.id).ok_or_else(|| {
                Error::Ledger(format!(
                    "task {} of stage {stage} counted rows of a read this job does not have",
                    latest.task
                ))
            })?;
            rejects.absorb_task(b, key)?;
        }
    }
    // Rows rejected by runs that failed (they wrote no ledger) or did not count.
    for folder in books.values().filter_map(|r| r.folder()) {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".stage-")
                && name.ends_with(".ndjson")
                && !kept.contains(&entry.path())
            {
                let path = entry.path();
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io(path.display().to_string(), e))?;
            }
        }
    }
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir.display().to_string(), e))? {
        let entry = entry.map_err(|e| Error::io(dir.display().to_string(), e))?;
        if is_ledger_file(&entry.file_name().to_string_lossy()) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
        }
    }
    Ok(absorbed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::rejects::OnError;

    fn ledger(stage: usize, task: usize, inputs: &[&str], ok: u64) -> TaskLedger {
        TaskLedger {
            stage,
            task,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            flow: PlanFlow {
                scanned: ok,
                ..PlanFlow::default()
            },
            books: vec![BooksLedger {
                id: 1,
                ranges: vec![(
                    format!("f{task}.csv"),
                    0,
                    9,
                    RangeCounts {
                        framed: Some(ok),
                        ok,
                        ..RangeCounts::default()
                    },
                )],
                ..BooksLedger::default()
            }],
            ..TaskLedger::default()
        }
    }

    #[test]
    fn only_the_latest_run_of_a_task_counts() {
        let dir = tempfile::tempdir().expect("tmp");
        let books: HashMap<u64, Arc<Rejects>> =
            [(1, Arc::new(Rejects::with_id(1, OnError::Reject)))].into();
        // Task 0 ran twice (ids 0 and 5: the same inputs), task 1 once; two tasks of the
        // next stage read the same partition of stage 1 (a broadcast).
        for l in [
            ledger(1, 0, &["scan 9 a.csv@0"], 10),
            ledger(1, 5, &["scan 9 a.csv@0"], 10),
            ledger(1, 1, &["scan 9 b.csv@0"], 7),
            ledger(2, 0, &["stage 1 partition 0", "stage 1 partition 1"], 0),
            ledger(2, 1, &["stage 1 partition 0", "stage 1 partition 2"], 0),
        ] {
            l.write(dir.path()).expect("write");
        }
        let absorbed = absorb(dir.path(), &books).expect("absorb");
        assert_eq!(absorbed.flow.scanned, 17, "the rerun counted once");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);

        // Two different tasks that read the same range: refused, not guessed at.
        for l in [
            ledger(1, 0, &["scan 9 a.csv@0", "scan 9 b.csv@0"], 10),
            ledger(1, 1, &["scan 9 b.csv@0"], 7),
        ] {
            l.write(dir.path()).expect("write");
        }
        let e = absorb(dir.path(), &books).expect_err("overlap").to_string();
        assert!(e.contains("both read scan 9 b.csv@0"), "{e}");
    }
}
