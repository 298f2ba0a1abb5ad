//! The row ledger: every row counted where it is framed, decoded, rejected, changed by SQL
//! and written — each count taken by a different part — and the check that the books
//! balance before anything is committed.
//!
//! The counts and where they come from:
//!
//! - **framed**: records the reader found in the bytes before decoding (CSV/NDJSON: the
//!   record framer of `csv_scan`; Parquet/ORC: the row counts in the file's footer);
//! - **ok / rejected / skipped**: rows the decoder passed on, rows sent to the rejects
//!   dataset, rows dropped (`--on-error skip`), per file range and per scan node;
//! - **added / removed by SQL**: per node of the executed plan, rows out minus rows in (plan
//!   metrics), so a `UNION ALL` or a join that multiplies adds rows and a `WHERE` removes
//!   them; a second scan of the same file (a self-join, `source` used twice) adds the rows it
//!   reads again, so `rows_in` stays the number of input records;
//! - **rejected by stages**: rows an enrich or lookup stage sent to the rejects dataset,
//!   counted by the stage node and by the rejects writer;
//! - **out**: rows the writers wrote (the manifest's counts), plus rows the writer rejected.
//!
//! The identity `rows_in + added = rows_out + rejected + skipped + removed` then follows only
//! if every part did what it says; each check below compares two counts taken by two parts.

pub mod lines;
pub mod origin;
pub mod rejects;
pub mod remote;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::ExecutionPlan;
use serde::Serialize;

use crate::error::{Error, Result};

/// Live counters a progress display can read while the write runs.
#[derive(Debug, Default)]
pub struct WriteProgress {
    /// Rows written so far.
    pub rows: AtomicU64,
}

/// The plan nodes that read input: DataFusion's and sluice's scans (files, databases).
const SCANS: [&str; 4] = [
    "DataSourceExec",
    "CsvScanExec",
    "FileByFileExec",
    "PgScanExec",
];

/// True for the plan nodes that read input files.
pub fn is_scan(plan: &Arc<dyn ExecutionPlan>) -> bool {
    SCANS.contains(&plan.name())
}

/// The counter under which a plan node reports the rows it sent to the rejects dataset
/// (stage nodes: enrich calls that failed, lookup misses).
pub const REJECTED_METRIC: &str = "rows_rejected";

/// A new id for a scan node (each node that reads input files gets its own, so a file read
/// twice by one plan is told apart from a file read once). Scan ids come from the same
/// counter as every other plan node's: a scan's tasks and a stage's or writer's tasks
/// write their rejected rows under (node, partition), and two nodes sharing an id would
/// have one task start the other's rows afresh (a lost rejects record while the counts
/// still balance).
pub fn next_scan_id() -> u64 {
    crate::plan::next_id()
}

/// Where rows were read: a range of a file (its first byte, or 0 for a whole file) by one
/// scan node, in one of its tasks (the partition reading the range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAt {
    /// The file as shown to the user.
    pub file: String,
    /// The range's first byte.
    pub start: u64,
    /// The scan node reading it ([`next_scan_id`]).
    pub scan: u64,
    /// The task reading it (its rejected rows go to that task's file).
    pub task: rejects::Task,
}

/// Counts of one range of one file as read by one scan node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RangeCounts {
    /// Records the framer found, once the range was read to its end (for Parquet/ORC
    /// ranges: rows read; their footer is checked per file). `None` for a range whose read
    /// stopped early: its consumer went away (`LIMIT`) or the file broke (`files_failed`).
    pub framed: Option<u64>,
    /// Rows passed on.
    pub ok: u64,
    /// Rows rejected (each bad row once, however often it was read).
    pub rejected: u64,
    /// Rows skipped.
    pub skipped: u64,
}

impl RangeCounts {
    fn read(&self) -> u64 {
        self.ok + self.rejected + self.skipped
    }

    /// Records of the range: framed, or read when the read stopped early.
    fn records(&self) -> u64 {
        self.framed.unwrap_or_else(|| self.read())
    }
}

/// What the footer of a columnar file promises, and how much of the file a scan read.
#[derive(Debug, Clone, Default)]
struct Columnar {
    /// Rows in the footer.
    rows: u64,
    /// Per scan node, the parts of the file (by first byte) it read to their end, and the
    /// number of parts it has.
    parts_done: HashMap<u64, (HashSet<u64>, usize)>,
}

/// Row counts of one input file.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FileCounts {
    /// Records in the file (framed before decoding, or the footer's row count).
    pub rows_in: u64,
    /// Rows read and passed on.
    pub rows_ok: u64,
    /// Rows written to the rejects dataset.
    pub rows_rejected: u64,
    /// Rows dropped (`--on-error skip`).
    pub rows_skipped: u64,
}

/// A range as the scans know it: (scan node, first byte).
type RangeKey = (u64, u64);

/// The read side of the ledger, shared by the scan nodes of one job.
#[derive(Debug, Default)]
pub struct ReadLedger {
    ranges: Mutex<BTreeMap<(String, u64), BTreeMap<u64, RangeCounts>>>,
    columnar: Mutex<BTreeMap<String, Columnar>>,
    /// Bad rows already handled, by file and position, with the range (scan node, first
    /// byte) that handled each: a row read by two scans is rejected once; a range read again
    /// (a retried task) handles its rows again.
    seen: Mutex<HashMap<String, HashMap<u64, RangeKey>>>,
}

impl ReadLedger {
    fn update(&self, at: &ReadAt, f: impl FnOnce(&mut RangeCounts)) {
        if let Ok(mut m) = self.ranges.lock() {
            let entry = m
                .entry((at.file.clone(), at.start))
                .or_default()
                .entry(at.scan)
                .or_default();
            f(entry);
        }
    }

    /// A range is read (again) from its start: a retried task's earlier counts of it are
    /// dropped, so it never counts twice.
    pub fn begin(&self, at: &ReadAt) {
        self.update(at, |c| *c = RangeCounts::default());
    }

    /// A range was read to its end, with `n` records framed.
    pub fn framed(&self, at: &ReadAt, n: u64) {
        self.update(at, |c| c.framed = Some(n));
    }

    /// Counts rows passed on.
    pub fn ok(&self, at: &ReadAt, n: u64) {
        self.update(at, |c| c.ok += n);
    }

    /// Counts a bad row; true when no other scan has handled this row before (`position`:
    /// its byte offset, or its row number in a columnar file; `None` when unknown).
    pub fn bad(&self, at: &ReadAt, position: Option<u64>, skipped: bool) -> bool {
        self.update(at, |c| {
            if skipped {
                c.skipped += 1
            } else {
                c.rejected += 1
            }
        });
        let Some(position) = position else {
            return true;
        };
        let range = (at.scan, at.start);
        self.seen
            .lock()
            .map(|mut s| {
                *s.entry(at.file.clone())
                    .or_default()
                    .entry(position)
                    .or_insert(range)
                    == range
            })
            .unwrap_or(true)
    }

    /// A part of a columnar file was read to its end at `at`: `rows` in the footer, `parts`
    /// parts of the file in that scan.
    pub fn columnar_part_done(&self, at: &ReadAt, rows: u64, parts: usize) {
        if let Ok(mut m) = self.columnar.lock() {
            let c = m.entry(at.file.clone()).or_default();
            c.rows = rows;
            let done = c
                .parts_done
                .entry(at.scan)
                .or_insert_with(|| (HashSet::new(), parts));
            done.0.insert(at.start);
        }
    }

    /// Every range read: file, first byte, scan node, counts.
    pub fn all_ranges(&self) -> Vec<(String, u64, u64, RangeCounts)> {
        self.ranges
            .lock()
            .map(|m| {
                m.iter()
                    .flat_map(|((file, start), scans)| {
                        scans
                            .iter()
                            .map(move |(scan, c)| (file.clone(), *start, *scan, *c))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every part of a columnar file read to its end: file, first byte, scan node, footer
    /// rows, parts of the file in that scan.
    pub fn all_columnar(&self) -> Vec<(String, u64, u64, u64, usize)> {
        self.columnar
            .lock()
            .map(|m| {
                m.iter()
                    .flat_map(|(file, c)| {
                        c.parts_done.iter().flat_map(move |(scan, (done, parts))| {
                            done.iter()
                                .map(move |start| (file.clone(), *start, *scan, c.rows, *parts))
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets the counts of the range `at` (as another process read it), replacing any.
    pub fn set_range(&self, at: &ReadAt, counts: RangeCounts) {
        self.update(at, |c| *c = counts);
    }

    /// The footer row count of a columnar file, once a part of it was read to its end.
    pub fn footer_rows(&self, file: &str) -> Option<u64> {
        self.columnar.lock().ok()?.get(file).map(|c| c.rows)
    }

    /// Per file, the counts of the scan that read the most of each range.
    pub fn per_file(&self) -> BTreeMap<String, FileCounts> {
        let mut out: BTreeMap<String, FileCounts> = BTreeMap::new();
        let Ok(ranges) = self.ranges.lock() else {
            return out;
        };
        for ((file, _), scans) in ranges.iter() {
            let Some(best) = widest(scans) else { continue };
            let f = out.entry(file.clone()).or_default();
            f.rows_in += best.records();
            f.rows_ok += best.ok;
            f.rows_rejected += best.rejected;
            f.rows_skipped += best.skipped;
        }
        out
    }

    /// Rows passed on by scans that read a range another scan read too: added to the flow
    /// by the SQL that reads `source` more than once.
    pub fn read_again(&self) -> u64 {
        let Ok(ranges) = self.ranges.lock() else {
            return 0;
        };
        ranges
            .values()
            .map(|scans| {
                let all: u64 = scans.values().map(|c| c.ok).sum();
                all - widest(scans).map_or(0, |c| c.ok)
            })
            .sum()
    }

    /// Checks every file: each scan's framed records of each range were all passed on,
    /// rejected or skipped; a columnar file read to its end holds the rows its footer says.
    pub fn check(&self) -> Result<()> {
        let mut short: BTreeMap<String, i128> = BTreeMap::new();
        if let Ok(ranges) = self.ranges.lock() {
            for ((file, _), scans) in ranges.iter() {
                for c in scans.values() {
                    if let Some(framed) = c.framed.filter(|&f| f != c.read()) {
                        *short.entry(file.clone()).or_default() +=
                            i128::from(framed) - i128::from(c.read());
                    }
                }
            }
        }
        if let (Ok(columnar), Ok(ranges)) = (self.columnar.lock(), self.ranges.lock()) {
            for (file, c) in columnar.iter() {
                for (scan, (done, parts)) in &c.parts_done {
                    if done.len() < *parts {
                        continue; // a scan cut short (LIMIT) says nothing of the whole file
                    }
                    let read: u64 = ranges
                        .iter()
                        .filter(|((f, _), _)| f == file)
                        .filter_map(|(_, scans)| scans.get(scan))
                        .map(RangeCounts::read)
                        .sum();
                    if read != c.rows {
                        *short.entry(file.clone()).or_default() +=
                            i128::from(c.rows) - i128::from(read);
                    }
                }
            }
        }
        match short.into_iter().find(|(_, n)| *n != 0) {
            None => Ok(()),
            Some((file, n)) => Err(Error::Ledger(unaccounted(n, Some(&file)))),
        }
    }
}

/// The scan that read the most records of a range (each range is read from its start, so
/// it read everything the others did).
fn widest(scans: &BTreeMap<u64, RangeCounts>) -> Option<&RangeCounts> {
    scans.values().max_by_key(|c| c.records())
}

/// `3 rows of data/x.csv unaccounted` / `2 rows more than the input of ...`.
fn unaccounted(n: i128, file: Option<&str>) -> String {
    let of = file.map(|f| format!(" of {f}")).unwrap_or_default();
    let rows = |n: i128| if n == 1 { "row" } else { "rows" };
    if n > 0 {
        format!("{n} {}{of} unaccounted", rows(n))
    } else {
        format!("{} {} more than the input{of}", -n, rows(-n))
    }
}

/// What the executed plan did between the scans and the writers, from its metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PlanFlow {
    /// Rows the scan nodes passed on.
    pub scanned: u64,
    /// Rows SQL steps (and batch functions) added: `UNION ALL`, joins that multiply.
    pub added: u64,
    /// Rows SQL steps (and inner lookups, batch functions) removed: `WHERE`, aggregation,
    /// `LIMIT`, joins.
    pub removed: u64,
    /// Rows enrich and lookup stages sent to the rejects dataset (their own count).
    pub stage_rejected: u64,
    /// Rows the plan handed to the writers.
    pub out: u64,
    /// The plan stops early somewhere (a `LIMIT`, a sort with a fetch): a node upstream of
    /// it may pass on fewer rows than it took in.
    pub limited: bool,
    /// Nodes that pass every row on (projections, repartitions, batch coalescing) but did
    /// not: (node, rows in minus rows out). Without a limit in the plan, rows lost there.
    pub lost_inside: Vec<(String, i128)>,
    /// Rows handed to write nodes inside the plan (a cluster's stages: see
    /// [`stage_flow`]).
    pub written: u64,
}

impl PlanFlow {
    /// Adds what another part of the plan did (another task of a cluster's job).
    pub fn add(&mut self, other: &PlanFlow) {
        self.scanned += other.scanned;
        self.added += other.added;
        self.removed += other.removed;
        self.stage_rejected += other.stage_rejected;
        self.out += other.out;
        self.limited |= other.limited;
        self.lost_inside.extend(other.lost_inside.iter().cloned());
        self.written += other.written;
    }
}

/// The flow of one task of a cluster's stage, from its executed plan (below the shuffle
/// writer): rows the stage's shuffle readers take in come from another stage (neither read
/// nor added here), and the rows a write node takes in are `written`. Summed over the job's
/// tasks ([`PlanFlow::add`]) it is the whole plan's flow, with `written` in place of `out`.
pub fn stage_flow(plan: &Arc<dyn ExecutionPlan>) -> PlanFlow {
    let mut flow = PlanFlow::default();
    walk(plan, &mut flow);
    flow
}

/// Plan nodes that bring rows from another stage of a cluster's job.
const STAGE_INPUTS: [&str; 2] = ["ShuffleReaderExec", "RangeShuffleReaderExec"];

/// Plan nodes that pass on every row they take in.
const PASS_THROUGH: [&str; 4] = [
    "ProjectionExec",
    "CoalesceBatchesExec",
    "RepartitionExec",
    "CoalescePartitionsExec",
];

/// Walks an executed plan: per node, rows out minus rows in (from the nodes' metrics).
pub fn plan_flow(plan: &Arc<dyn ExecutionPlan>) -> PlanFlow {
    let mut flow = PlanFlow::default();
    flow.out = walk(plan, &mut flow);
    flow
}

/// Nodes whose counts of a partition run again (a retried task) replace the earlier run's:
/// [`retried_once`] reads their metrics. sluice's own nodes, and DataFusion's projection,
/// which passes each partition's rows on one for one (it takes the rows' origin columns off
/// above the stages: see [`origin`]).
const OWN_NODES: [&str; 5] = [
    "CsvScanExec",
    "FileByFileExec",
    "MapExec",
    "WriteExec",
    "ProjectionExec",
];

/// The sum of counter `name` over the partitions of one of sluice's own nodes, each
/// partition counted once however often it ran: a partition run again registers new
/// counters beside the earlier run's, and the run that got furthest (the one that
/// finished) holds the most. DataFusion's other nodes are summed as they report.
fn retried_once(plan: &Arc<dyn ExecutionPlan>, metrics: &MetricsSet, name: &str) -> Option<u64> {
    if !OWN_NODES.contains(&plan.name()) {
        return metrics
            .sum(|m| m.value().name() == name)
            .map(|v| v.as_usize() as u64);
    }
    let mut by_partition: BTreeMap<Option<usize>, u64> = BTreeMap::new();
    for m in metrics.iter().filter(|m| m.value().name() == name) {
        let n = by_partition.entry(m.partition()).or_default();
        *n = (*n).max(m.value().as_usize() as u64);
    }
    (!by_partition.is_empty()).then(|| by_partition.values().sum())
}

fn walk(plan: &Arc<dyn ExecutionPlan>, flow: &mut PlanFlow) -> u64 {
    let metrics = plan.metrics();
    let output = metrics
        .as_ref()
        .and_then(|m| retried_once(plan, m, "output_rows"));
    if is_scan(plan) {
        let n = output.unwrap_or(0);
        flow.scanned += n;
        return n;
    }
    if STAGE_INPUTS.contains(&plan.name()) {
        return output.unwrap_or(0);
    }
    if plan.name() == "WriteExec" {
        let input: u64 = plan.children().into_iter().map(|c| walk(c, flow)).sum();
        flow.written += input;
        return 0;
    }
    let input: u64 = plan.children().into_iter().map(|c| walk(c, flow)).sum();
    // A node without a row count passes its input on as far as the ledger can tell.
    let out = output.unwrap_or(input);
    if plan.fetch().is_some() || plan.name().contains("Limit") {
        flow.limited = true;
    }
    if PASS_THROUGH.contains(&plan.name()) && out != input {
        flow.lost_inside
            .push((plan.name().to_string(), i128::from(input) - i128::from(out)));
    }
    let rejected = metrics
        .as_ref()
        .and_then(|m| retried_once(plan, m, REJECTED_METRIC))
        .unwrap_or(0);
    flow.stage_rejected += rejected;
    let kept = input.saturating_sub(rejected);
    if out > kept {
        flow.added += out - kept;
    } else {
        flow.removed += kept - out;
    }
    out
}

/// The job's books, closed after the writers finished and before the commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Books {
    /// Input records.
    pub rows_in: u64,
    /// Rows added by SQL (including rows read again).
    pub added: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Rows rejected (read, by stages, at write).
    pub rejected: u64,
    /// Rows skipped.
    pub skipped: u64,
    /// Rows removed by SQL.
    pub removed: u64,
}

/// Closes the books of a job: the read ledger's checks, then every count of the plan
/// against the count of the part it feeds. `records` is the number of records in the
/// rejects dataset (counted while its files were joined); `rejected_later` and
/// `rejected_at_write` are the rejects writer's counts of stage and writer rejects;
/// `written` what the writers wrote.
pub fn close(
    read: &ReadLedger,
    flow: &PlanFlow,
    records: u64,
    rejected_later: u64,
    rejected_at_write: u64,
    written: u64,
) -> Result<Books> {
    read.check()?;
    if let (false, Some((node, n))) = (flow.limited, flow.lost_inside.first()) {
        return Err(Error::Ledger(unaccounted(
            *n,
            Some(&format!("the plan's {node}")),
        )));
    }
    let files = read.per_file();
    let rows_in: u64 = files.values().map(|f| f.rows_in).sum();
    let read_rejected: u64 = files.values().map(|f| f.rows_rejected).sum();
    let skipped: u64 = files.values().map(|f| f.rows_skipped).sum();
    let passed: u64 = files.values().map(|f| f.rows_ok).sum();
    let again = read.read_again();
    // A plan that stops early (a LIMIT) may leave batches the scans had already counted
    // and sent in the channels between them and the plan: the limit removed those rows.
    let mut flow = flow.clone();
    if flow.limited && passed + again > flow.scanned {
        flow.removed += passed + again - flow.scanned;
        flow.scanned = passed + again;
    }
    if passed + again != flow.scanned {
        return Err(Error::Ledger(format!(
            "the scans passed on {} rows but the plan received {}",
            passed + again,
            flow.scanned
        )));
    }
    if flow.stage_rejected != rejected_later {
        return Err(Error::Ledger(format!(
            "stages rejected {} rows but {} reached the rejects dataset",
            flow.stage_rejected, rejected_later
        )));
    }
    if flow.out != written + rejected_at_write {
        return Err(Error::Ledger(unaccounted(
            i128::from(flow.out) - i128::from(written + rejected_at_write),
            Some("the output"),
        )));
    }
    let books = Books {
        rows_in,
        added: flow.added + again,
        rows_out: written,
        rejected: read_rejected + rejected_later + rejected_at_write,
        skipped,
        removed: flow.removed,
    };
    if books.rejected != records {
        return Err(Error::Ledger(format!(
            "{} rows were rejected but {records} reached the rejects dataset",
            books.rejected
        )));
    }
    let left = i128::from(books.rows_in) + i128::from(books.added);
    let right = i128::from(books.rows_out)
        + i128::from(books.rejected)
        + i128::from(books.skipped)
        + i128::from(books.removed);
    if left != right {
        return Err(Error::Ledger(unaccounted(left - right, None)));
    }
    Ok(books)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_and_other_plan_nodes_never_share_an_id() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(next_scan_id()));
            assert!(seen.insert(crate::plan::next_id()));
        }
    }

    fn at(file: &str, start: u64, scan: u64) -> ReadAt {
        ReadAt {
            file: file.into(),
            start,
            scan,
            task: rejects::Task {
                node: scan,
                partition: 0,
            },
        }
    }

    #[test]
    fn a_record_framed_but_never_decoded_fails_the_check() {
        let l = ReadLedger::default();
        l.framed(&at("data/x.csv", 0, 1), 10);
        l.ok(&at("data/x.csv", 0, 1), 6);
        l.bad(&at("data/x.csv", 0, 1), Some(40), false);
        let e = l.check().expect_err("must fail").to_string();
        assert_eq!(e, "ledger: 3 rows of data/x.csv unaccounted");
        l.ok(&at("data/x.csv", 0, 1), 4);
        assert_eq!(
            l.check().expect_err("must fail").to_string(),
            "ledger: 1 row more than the input of data/x.csv"
        );
    }

    #[test]
    fn a_file_read_twice_counts_once_and_its_bad_rows_once() {
        let l = ReadLedger::default();
        for scan in [1, 2] {
            let a = at("x.csv", 0, scan);
            l.framed(&a, 5);
            l.ok(&a, 4);
            let first = l.bad(&a, Some(17), false);
            assert_eq!(first, scan == 1, "scan {scan}");
        }
        l.check().expect("balanced");
        let f = &l.per_file()["x.csv"];
        assert_eq!((f.rows_in, f.rows_ok, f.rows_rejected), (5, 4, 1));
        assert_eq!(l.read_again(), 4);
    }

    #[test]
    fn a_columnar_file_must_hold_its_footer_rows_when_read_to_the_end() {
        let l = ReadLedger::default();
        for (start, rows) in [(4, 100), (5000, 80)] {
            let a = at("x.parquet", start, 7);
            l.framed(&a, rows);
            l.ok(&a, rows);
            l.columnar_part_done(&a, 200, 2);
        }
        assert_eq!(
            l.check().expect_err("must fail").to_string(),
            "ledger: 20 rows of x.parquet unaccounted"
        );
        // A scan that did not read every part (LIMIT) is not held to the footer.
        let l = ReadLedger::default();
        l.framed(&at("y.parquet", 4, 8), 10);
        l.ok(&at("y.parquet", 4, 8), 10);
        l.columnar_part_done(&at("y.parquet", 4, 8), 200, 2);
        l.check().expect("balanced");
        // The same part done twice (a retried task) is still one part of two.
        l.columnar_part_done(&at("y.parquet", 4, 8), 200, 2);
        l.check().expect("balanced");
    }

    #[test]
    fn a_range_read_again_counts_once_and_handles_its_bad_rows_again() {
        let l = ReadLedger::default();
        let a = at("x.csv", 0, 1);
        // A first run reads part of the range (one bad row), then stops (its task failed).
        l.begin(&a);
        l.ok(&a, 3);
        assert!(l.bad(&a, Some(40), false), "first time this row is seen");
        // The retry reads the whole range: the same bad row is its own again.
        l.begin(&a);
        l.ok(&a, 9);
        assert!(
            l.bad(&a, Some(40), false),
            "the range that handled it reads it again"
        );
        l.framed(&a, 10);
        l.check()
            .expect("balanced: the first run's counts were dropped");
        let f = &l.per_file()["x.csv"];
        assert_eq!((f.rows_in, f.rows_ok, f.rows_rejected), (10, 9, 1));
        // Another scan of the file meets the row too: not written a second time.
        let b = at("x.csv", 0, 2);
        l.begin(&b);
        assert!(!l.bad(&b, Some(40), false));
        // Without `begin`, a second run would count twice and the books would not balance.
        l.ok(&a, 9);
        assert!(l.check().is_err());
    }

    #[test]
    fn the_books_balance_only_when_every_part_agrees() {
        let l = ReadLedger::default();
        let a = at("x.csv", 0, 1);
        l.framed(&a, 10);
        l.ok(&a, 9);
        l.bad(&a, Some(3), false);
        let flow = PlanFlow {
            scanned: 9,
            added: 0,
            removed: 2,
            stage_rejected: 1,
            out: 6,
            ..PlanFlow::default()
        };
        let books = close(&l, &flow, 2, 1, 0, 6).expect("balanced");
        assert_eq!(
            books,
            Books {
                rows_in: 10,
                added: 0,
                rows_out: 6,
                rejected: 2,
                skipped: 0,
                removed: 2
            }
        );
        // A writer that lost a row.
        let e = close(&l, &flow, 2, 1, 0, 5)
            .expect_err("must fail")
            .to_string();
        assert_eq!(e, "ledger: 1 row of the output unaccounted");
        // A stage reject that never reached the rejects file.
        assert!(close(&l, &flow, 2, 0, 0, 6).is_err());
        // A rejected row counted everywhere but missing from the rejects dataset (its
        // record lost on the way).
        assert_eq!(
            close(&l, &flow, 1, 1, 0, 6)
                .expect_err("must fail")
                .to_string(),
            "ledger: 2 rows were rejected but 1 reached the rejects dataset"
        );
        // Under a limit, rows the scans sent that the plan never took were removed by it.
        let cut = PlanFlow {
            scanned: 7,
            removed: 0,
            limited: true,
            ..flow.clone()
        };
        let books = close(&l, &cut, 2, 1, 0, 6).expect("the limit took them");
        assert_eq!(books.removed, 2);
        // The plan received other rows than the scans passed on.
        let more = PlanFlow {
            scanned: 8,
            ..flow.clone()
        };
        assert!(close(&l, &more, 2, 1, 0, 6).is_err());
        // A node that passes every row on lost some (and no limit explains it).
        let lost = PlanFlow {
            lost_inside: vec![("RepartitionExec".into(), 2)],
            ..flow.clone()
        };
        assert_eq!(
            close(&l, &lost, 2, 1, 0, 6)
                .expect_err("must fail")
                .to_string(),
            "ledger: 2 rows of the plan's RepartitionExec unaccounted"
        );
        let limited = PlanFlow {
            limited: true,
            ..lost
        };
        close(&l, &limited, 2, 1, 0, 6).expect("a limit explains it");
    }

    /// Runs SQL over a 10-row CSV file (a file scan, as in a job) and walks the executed
    /// plan.
    async fn flow_of(sql: &str) -> PlanFlow {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t.csv");
        let text: String = std::iter::once("a\n".to_string())
            .chain((0..10).map(|i| format!("{i}\n")))
            .collect();
        std::fs::write(&path, text).expect("write");
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_csv(
            "t",
            path.display().to_string(),
            datafusion::prelude::CsvReadOptions::new(),
        )
        .await
        .expect("register");
        let df = ctx.sql(sql).await.expect("sql");
        let plan = df.create_physical_plan().await.expect("plan");
        datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx())
            .await
            .expect("collect");
        plan_flow(&plan)
    }

    #[tokio::test]
    async fn plan_nodes_are_counted_from_their_metrics() {
        let f = flow_of("SELECT a + 1 AS b FROM t WHERE a < 7").await;
        assert_eq!(
            (f.scanned, f.removed, f.added, f.out),
            (10, 3, 0, 7),
            "{f:?}"
        );
        assert!(!f.limited && f.lost_inside.is_empty(), "{f:?}");
        let f = flow_of("SELECT a FROM t UNION ALL SELECT a FROM t").await;
        assert_eq!((f.scanned, f.added, f.out), (20, 0, 20), "{f:?}");
        let f = flow_of("SELECT a FROM t CROSS JOIN (SELECT 1 AS x UNION ALL SELECT 2)").await;
        assert_eq!(f.out, 20, "{f:?}");
        assert_eq!(f.added - f.removed, 10, "{f:?}");
        // A limit the scan takes reads less; one above a sort stops the plan early.
        let f = flow_of("SELECT a FROM t LIMIT 3").await;
        assert_eq!((f.scanned, f.out), (3, 3), "{f:?}");
        let f = flow_of("SELECT a FROM t ORDER BY a DESC LIMIT 3").await;
        assert!(f.limited, "{f:?}");
        assert_eq!((f.scanned, f.removed, f.out), (10, 7, 3), "{f:?}");
    }
}
