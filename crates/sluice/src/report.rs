//! Row accounting, live progress counters and the end-of-run report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::object_store::path::Path;

use datafusion::physical_plan::ExecutionPlan;
use serde::Serialize;

use crate::ledger::WriteProgress;
use crate::storage::counting::ReadCounter;

/// Live counters shared with a progress display while a job runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Input files in the job (known after resolving).
    pub files_total: AtomicU64,
    /// Input bytes in the job.
    pub bytes_total: AtomicU64,
    /// Rows written so far.
    pub write: Arc<WriteProgress>,
    /// Bytes the scans fetched so far.
    pub read: Arc<ReadCounter>,
    /// Input files and their sizes (set once inputs are resolved).
    pub files: OnceLock<HashMap<Path, u64>>,
    /// Counters of the enrich stages (set when the plan is built).
    pub enrich: Mutex<Vec<Arc<crate::enrich::EnrichStats>>>,
}

impl Progress {
    /// Rows written so far.
    pub fn rows_out(&self) -> u64 {
        self.write.rows.load(Ordering::Relaxed)
    }

    /// Input bytes fetched so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.bytes.load(Ordering::Relaxed)
    }

    /// Input files read to their end so far.
    pub fn files_done(&self) -> u64 {
        self.files
            .get()
            .map(|sizes| self.read.files_done(sizes))
            .unwrap_or(0)
    }
}

/// The machine-readable report of a run (`--report-json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Input files read.
    pub files_read: u64,
    /// Database reads (the URL without its password, then the table or `(query)`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables_read: Vec<String>,
    /// Bytes of input files (compressed size for compressed files).
    pub bytes_read: u64,
    /// Records in the inputs, counted where they are framed (before decoding; for Parquet
    /// and ORC the footers' row counts), each record once however often the SQL reads it.
    pub rows_in: u64,
    /// Rows written to the output.
    pub rows_out: u64,
    /// Rows that went to the rejects dataset: rows that could not be read, plus rows whose
    /// enrich call failed (`rows_rejected_by_enrich`).
    pub rows_rejected: u64,
    /// Rows rejected by enrich stages (part of `rows_rejected`).
    pub rows_rejected_by_enrich: u64,
    /// Rows the writer could not place (part of `rows_rejected`): a partition value that
    /// would make a folder name longer than 255 bytes.
    pub rows_rejected_at_write: u64,
    /// Rows that could not be read and were dropped (`--on-error skip`).
    pub rows_skipped: u64,
    /// Rows of input files that broke mid-read (`files_failed`) which their own metadata
    /// promised but were never read (Parquet/ORC footers; unknown for text files).
    pub rows_unread: u64,
    /// Where rejected rows were written, when there were any.
    pub rejects_path: Option<String>,
    /// Per input file: records in it, rows passed on, rejected and skipped.
    pub files: Vec<FileReport>,
    /// Each CSV file's dialect, as detected or given.
    pub dialects: Vec<DialectReport>,
    /// Rows the SQL steps added (`UNION ALL`, joins that multiply rows, `source` read twice),
    /// summed over the plan's nodes from their metrics.
    pub rows_added_by_sql: u64,
    /// Rows the SQL steps removed (`WHERE`, `DISTINCT`, aggregation, `LIMIT`, inner joins
    /// and inner lookups), summed over the plan's nodes. With the counts above:
    /// `rows_in + rows_added_by_sql = rows_out + rows_rejected + rows_skipped +
    /// rows_removed_by_sql`, checked before the commit.
    pub rows_removed_by_sql: u64,
    /// What each enrich stage did: keys, calls, cache hits, retries, failures, latency.
    pub enrich: Vec<crate::enrich::EnrichReport>,
    /// What each lookup did: size, bytes read, matched and missing rows.
    pub lookups: Vec<crate::lookup::LookupReport>,
    /// Output files written.
    pub files_written: u64,
    /// Bytes of output files.
    pub bytes_written: u64,
    /// Wall-clock seconds for the whole job.
    pub seconds: f64,
    /// The output path.
    pub output: String,
    /// The output format.
    pub output_format: String,
    /// Schema widening decisions taken while merging files.
    pub schema_decisions: Vec<String>,
    /// Files inside input folders skipped because their format is unknown.
    pub skipped_files: Vec<String>,
    /// Files that could not be read as a whole (empty, corrupt, cut off), with the reason;
    /// the job went on without them (`skip` and `reject` modes).
    pub files_failed: Vec<crate::ledger::rejects::FailedFile>,
    /// Big CSV files read whole because no record boundary could be told safely near a cut
    /// (a one-column file, stray quotes inside fields, rows with the wrong field count).
    pub unsplit_files: Vec<String>,
    /// Threads (partitions) used.
    pub threads: usize,
    /// Partitions the file scans produced: above the file count when big files were split
    /// into byte ranges.
    pub input_partitions: usize,
}

/// Row counts of one input file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileReport {
    /// The file.
    pub file: String,
    /// Records framed in the file (`rows_ok + rows_rejected + rows_skipped`, checked).
    pub rows_in: u64,
    /// Rows passed on.
    pub rows_ok: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// Rows skipped.
    pub rows_skipped: u64,
}

/// The dialect one CSV file was read with.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DialectReport {
    /// The file.
    pub file: String,
    /// The dialect in a few words (`';' delimited, header, 2 lines before it skipped`).
    pub dialect: String,
    /// Why the detection was not sure (absent: it was, or the options fixed it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doubt: Option<String>,
}

/// Counts the output partitions of every file scan in a plan.
pub fn scan_partitions(plan: &Arc<dyn ExecutionPlan>) -> usize {
    if is_scan(plan) {
        return plan.properties().output_partitioning().partition_count();
    }
    plan.children().into_iter().map(scan_partitions).sum()
}

pub(crate) use crate::ledger::is_scan;
