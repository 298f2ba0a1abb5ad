//! Bad rows: what to do with them (`--on-error`), where rejected rows go, and the counts.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use serde::Serialize;

use crate::error::{Error, Result};
pub use crate::ledger::FileCounts;
use crate::ledger::{ReadAt, ReadLedger};

/// What happens to a row that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop at the first bad row with its file, line, offset, column and reason.
    Fail,
    /// Drop bad rows, counting them in the report.
    Skip,
    /// Write bad rows to the rejects dataset (the default).
    #[default]
    Reject,
}

impl FromStr for OnError {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fail" => Ok(OnError::Fail),
            "skip" => Ok(OnError::Skip),
            "reject" => Ok(OnError::Reject),
            other => Err(Error::Config(format!(
                "on-error must be fail, skip or reject, not '{other}'"
            ))),
        }
    }
}

/// Most bytes of a bad row kept in its reject record.
pub const RAW_CAP: usize = 4096;

/// One rejected row.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RejectRecord {
    /// The file it came from.
    pub file: String,
    /// 1-based physical line where the row starts (text formats); for Parquet/ORC the
    /// 1-based row number in the file, or 0 when the file was read in ranges.
    pub line: u64,
    /// Byte offset of the row in the (uncompressed) file.
    pub byte_offset: u64,
    /// The column at fault, when known.
    pub column: Option<String>,
    /// `too_many_fields`, `too_few_fields`, `type_mismatch`, `invalid_utf8`,
    /// `unterminated_quote`, `malformed_json`, `too_deep`, `null_in_not_null`.
    pub kind: &'static str,
    /// What went wrong, in words.
    pub message: String,
    /// The row's raw text (lossy UTF-8), capped at [`RAW_CAP`] bytes.
    pub raw: String,
    /// True when `raw` was cut.
    pub raw_truncated: bool,
    /// The row comes from a columnar file (Parquet/ORC): `line` is a row number and there
    /// is no byte offset.
    #[serde(skip)]
    pub columnar: bool,
    /// The enrich stage that rejected the row (rows rejected after the read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The last HTTP status of a failed call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Attempts made by a failed call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The URL of a failed call, secrets redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl RejectRecord {
    /// The one-line error `--on-error fail` stops with.
    pub fn to_error(&self) -> Error {
        let column = self
            .column
            .as_ref()
            .map(|c| format!(", column '{c}'"))
            .unwrap_or_default();
        if self.columnar {
            let row = match self.line {
                0 => String::new(),
                n => format!(" row {n}:"),
            };
            return Error::BadRow(format!(
                "{}:{row} {} ({})",
                self.file, self.message, self.kind
            ));
        }
        Error::BadRow(format!(
            "{}:{}: {} (byte {}{column}, {})",
            self.file, self.line, self.message, self.byte_offset, self.kind
        ))
    }
}

/// One partition of one plan node: the unit whose rejected rows are written to a file of
/// their own and counted apart. A task run again (a retried partition) replaces what its
/// earlier run wrote and counted, so it never counts twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Task {
    /// The plan node (a scan's id, a stage node's or a writer's).
    pub node: u64,
    /// The partition.
    pub partition: usize,
}

/// What one task rejected.
#[derive(Debug, Default)]
struct TaskRejects {
    writer: Option<BufWriter<File>>,
    /// Rows rejected by a stage (`reject_later`).
    later: u64,
    /// Rows rejected by the writer.
    at_write: u64,
}

/// Collects bad rows from all partitions: each task writes its own file in the rejects
/// folder, and [`Rejects::finish`] joins the files of the tasks' last runs into one
/// `rejects.ndjson` (or `.parquet`), in task order, before the commit.
#[derive(Debug)]
pub struct Rejects {
    /// Its id among the session's [`crate::services::Services`] (scan nodes hold this).
    id: u64,
    /// The mode in force.
    pub mode: OnError,
    dir: Mutex<Option<PathBuf>>,
    tasks: Mutex<BTreeMap<Task, TaskRejects>>,
    /// The read side of the row ledger (per file range and scan node).
    pub ledger: ReadLedger,
    /// Line-break counts of the files read, for the line numbers of bad rows.
    pub lines: super::lines::LineIndex,
    failed: Mutex<Vec<FailedFile>>,
    allow_failed: std::sync::atomic::AtomicBool,
    /// In a cluster's executor: the label of the task these books belong to (all its
    /// rejected rows go to one file named after it).
    remote: Option<String>,
    /// Rejects files of tasks that ran elsewhere, read back by [`Rejects::absorb_task`].
    absorbed: Mutex<BTreeMap<Task, PathBuf>>,
}

/// The file task `task` writes its rejected rows to, in the rejects folder `dir`.
fn task_file(dir: &std::path::Path, task: Task) -> PathBuf {
    dir.join(format!(".task-{}-{}.ndjson", task.node, task.partition))
}

/// A reader that counts the line ends passing through it (one per rejects record).
struct LineCount<'a, R> {
    inner: R,
    lines: &'a mut u64,
}

impl<R: std::io::Read> std::io::Read for LineCount<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        Ok(n)
    }
}

/// A new folder name under the system's temporary folder for rejected rows of a run that
/// has no output of its own (`sluice query`, a Python read): `PREFIX-PID-MILLIS-N`, unique
/// within the process and across processes. Nothing is created until a row is rejected.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The file a cluster task labelled `label` writes its rejected rows to.
pub fn remote_file_name(label: &str) -> String {
    format!(".{label}.ndjson")
}

/// What a scan node holds of the [`Rejects`] it reports to: their id among the session's
/// [`crate::services::Services`] (looked up when the node runs) and the mode (for plans).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BooksRef {
    /// The id of the rejects and ledger.
    pub id: u64,
    /// The mode in force.
    pub mode: OnError,
}

/// A file that could not be read as a whole (missing, empty, corrupt, cut off).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FailedFile {
    /// The file.
    pub file: String,
    /// Why.
    pub reason: String,
    /// Rows the file holds by its own metadata (Parquet/ORC footers), when known: with
    /// `rows_read`, how many rows of it are in no count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_expected: Option<u64>,
    /// Rows of it read (and passed on, rejected or skipped) before the break.
    pub rows_read: u64,
}

impl FailedFile {
    /// Rows the file holds that were not read, when its metadata tells.
    pub fn rows_unread(&self) -> Option<u64> {
        self.rows_expected.map(|e| e.saturating_sub(self.rows_read))
    }

    /// `file: reason (N of M rows read)` for messages.
    pub fn describe(&self) -> String {
        match self.rows_expected {
            Some(e) => format!(
                "{}: {} ({} of {e} rows read)",
                self.file, self.reason, self.rows_read
            ),
            None if self.rows_read > 0 => format!(
                "{}: {} (after {} rows)",
                self.file, self.reason, self.rows_read
            ),
            None => format!("{}: {}", self.file, self.reason),
        }
    }
}

impl Rejects {
    /// A collector for the given mode.
    pub fn new(mode: OnError) -> Self {
        Rejects::with_id(crate::plan::next_id(), mode)
    }

    /// A collector with a given id: the books of a job rebuilt in another session (the id
    /// its plan's nodes hold).
    pub fn with_id(id: u64, mode: OnError) -> Self {
        Rejects {
            id,
            mode,
            dir: Mutex::new(None),
            tasks: Mutex::new(BTreeMap::new()),
            ledger: ReadLedger::default(),
            lines: super::lines::LineIndex::default(),
            failed: Mutex::new(Vec::new()),
            allow_failed: std::sync::atomic::AtomicBool::new(false),
            remote: None,
            absorbed: Mutex::new(BTreeMap::new()),
        }
    }

    /// The books of a read in one task of a cluster's executor: rejected rows go to `dir`
    /// (the client's rejects folder, on shared storage), all into one file named after the
    /// task (`label`), and when the task has succeeded its counts are taken by
    /// [`Rejects::task_books`] (see [`crate::cluster::engine`]).
    pub fn on_executor(id: u64, mode: OnError, dir: Option<PathBuf>, label: String) -> Self {
        let r = Rejects {
            remote: Some(label),
            ..Rejects::with_id(id, mode)
        };
        if let Some(dir) = dir {
            r.set_dir(dir);
        }
        r
    }

    /// True for the books of a cluster job's read in an executor's task (made by
    /// [`Rejects::on_executor`]), whose counts go back to the client.
    pub fn on_cluster(&self) -> bool {
        self.remote.is_some()
    }

    /// In a cluster's executor, for a task that failed: closes and deletes the file its
    /// rejected rows went to (no ledger names it, so nothing would ever read or remove it).
    pub fn discard_task_file(&self) -> Result<()> {
        let (Some(label), Some(dir)) = (&self.remote, self.folder()) else {
            return Ok(());
        };
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.values_mut() {
                drop(t.writer.take());
            }
        }
        let path = dir.join(remote_file_name(label));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(path.display().to_string(), e))
            }
            _ => Ok(()),
        }
    }

    /// What an executor's task counted and rejected of this read, its rejects file closed
    /// and synced: to be written to the job's ledger folder.
    pub fn task_books(&self) -> Result<super::remote::BooksLedger> {
        let mut rejects = None;
        let (mut later, mut at_write) = (0, 0);
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.values_mut() {
                later += t.later;
                at_write += t.at_write;
                if let Some(mut w) = t.writer.take() {
                    w.flush().map_err(|e| Error::io("rejects", e))?;
                    w.get_ref()
                        .sync_all()
                        .map_err(|e| Error::io("rejects", e))?;
                    rejects = self.remote.as_deref().map(remote_file_name);
                }
            }
        }
        Ok(super::remote::BooksLedger {
            id: self.id,
            ranges: self.ledger.all_ranges(),
            columnar: self.ledger.all_columnar(),
            failed: self.failed(),
            later,
            at_write,
            rejects,
        })
    }

    /// Takes in what a task that ran elsewhere counted and rejected of this read
    /// ([`Rejects::task_books`]); `key` orders its rejects file among the others in
    /// [`Rejects::finish`].
    pub fn absorb_task(&self, books: &super::remote::BooksLedger, key: Task) -> Result<()> {
        for (file, start, scan, counts) in &books.ranges {
            let at = ReadAt {
                file: file.clone(),
                start: *start,
                scan: *scan,
                task: key,
            };
            self.ledger.set_range(&at, *counts);
        }
        for (file, start, scan, rows, parts) in &books.columnar {
            let at = ReadAt {
                file: file.clone(),
                start: *start,
                scan: *scan,
                task: key,
            };
            self.ledger.columnar_part_done(&at, *rows, *parts);
        }
        for f in &books.failed {
            self.file_failed_expecting(&f.file, &f.reason, f.rows_expected);
        }
        if let Ok(mut tasks) = self.tasks.lock() {
            let t = tasks.entry(key).or_default();
            t.later = books.later;
            t.at_write = books.at_write;
        }
        if let (Some(name), Some(dir)) = (&books.rejects, self.folder()) {
            if let Ok(mut a) = self.absorbed.lock() {
                a.insert(key, dir.join(name));
            }
        }
        Ok(())
    }

    /// A task starts (again): what an earlier run of it wrote and counted is dropped.
    pub fn begin(&self, task: Task) -> Result<()> {
        if self.on_cluster() {
            // A cluster's task runs each partition once; a retry is a new task.
            return Ok(());
        }
        let earlier = self
            .tasks
            .lock()
            .map_err(|_| Error::Config("rejects writer poisoned".into()))?
            .insert(task, TaskRejects::default());
        if let Some(TaskRejects {
            writer: Some(w), ..
        }) = earlier
        {
            drop(w);
            if let Some(dir) = self.folder() {
                let path = task_file(&dir, task);
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io(path.display().to_string(), e))?;
            }
        }
        Ok(())
    }

    /// The folder rejected rows go to, once set.
    pub fn folder(&self) -> Option<PathBuf> {
        self.dir.lock().ok().and_then(|d| d.clone())
    }

    /// Its id among the session's services.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What a scan node holds to report here.
    pub fn books(&self) -> BooksRef {
        BooksRef {
            id: self.id,
            mode: self.mode,
        }
    }

    /// Lets a job with failed files commit what it could read (`--allow-failed-files`).
    pub fn allow_failed_files(&self, allow: bool) {
        self.allow_failed.store(allow, Ordering::Relaxed);
    }

    /// Before a commit: an error naming the files that could not be read, unless the job
    /// allows them.
    pub fn check_failed(&self) -> Result<()> {
        let failed = self.failed();
        if failed.is_empty() || self.allow_failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut list: Vec<String> = failed.iter().take(3).map(FailedFile::describe).collect();
        if failed.len() > 3 {
            list.push(format!("and {} more", failed.len() - 3));
        }
        Err(Error::FilesFailed {
            count: failed.len(),
            list: list.join("; "),
        })
    }

    /// Sets the folder rejected rows are written to (inside the output's staging folder, so
    /// they are committed with the output).
    pub fn set_dir(&self, dir: PathBuf) {
        if let Ok(mut d) = self.dir.lock() {
            *d = Some(dir);
        }
    }

    /// Counts good rows read at `at`.
    pub fn count_ok(&self, at: &ReadAt, rows: u64) {
        self.ledger.ok(at, rows);
    }

    /// Handles one bad row read at `at` according to the mode; `Err` in `fail` mode. A row
    /// that another scan of the same file handled already (`source` read twice by the SQL)
    /// is counted for this scan but written and totalled once.
    pub fn bad_row(&self, record: RejectRecord, at: &ReadAt) -> Result<()> {
        let position = match (record.columnar, record.line) {
            (false, _) => Some(record.byte_offset),
            (true, 0) => None,
            (true, row) => Some(row),
        };
        match self.mode {
            OnError::Fail => Err(record.to_error()),
            OnError::Skip => {
                self.ledger.bad(at, position, true);
                Ok(())
            }
            OnError::Reject => {
                if self.ledger.bad(at, position, false) {
                    self.write(&record, at.task, |_| {})?;
                }
                Ok(())
            }
        }
    }

    /// Rejects a row after the read (an enrich call that failed, a lookup miss) in task
    /// `task`: written to the rejects dataset in every `--on-error` mode, counted apart from
    /// the rows that could not be read.
    pub fn reject_later(&self, record: RejectRecord, task: Task) -> Result<()> {
        self.write(&record, task, |t| t.later += 1)
    }

    /// Rejects a row the writer cannot place (a partition value too long for a folder
    /// name) in task `task`: written to the rejects dataset in every `--on-error` mode.
    pub fn reject_at_write(&self, record: RejectRecord, task: Task) -> Result<()> {
        self.write(&record, task, |t| t.at_write += 1)
    }

    fn sum(&self, f: impl Fn(&TaskRejects) -> u64) -> u64 {
        self.tasks
            .lock()
            .map(|t| t.values().map(f).sum())
            .unwrap_or(0)
    }

    /// Rows rejected by the writer (each task's last run).
    pub fn rejected_at_write(&self) -> u64 {
        self.sum(|t| t.at_write)
    }

    /// Rows rejected after the read, by stages (each task's last run).
    pub fn rejected_later(&self) -> u64 {
        self.sum(|t| t.later)
    }

    fn write(
        &self,
        record: &RejectRecord,
        task: Task,
        count: impl FnOnce(&mut TaskRejects),
    ) -> Result<()> {
        let dir = self
            .folder()
            .ok_or_else(|| Error::Config("rejected rows have nowhere to go".into()))?;
        // A cluster's task writes all its rows to one file, named after the task.
        let task = if self.on_cluster() {
            Task::default()
        } else {
            task
        };
        let mut tasks = self
            .tasks
            .lock()
            .map_err(|_| Error::Config("rejects writer poisoned".into()))?;
        let t = tasks.entry(task).or_default();
        if t.writer.is_none() {
            crate::storage::manifest::create_job_dir(&dir)?;
            let path = match &self.remote {
                Some(label) => dir.join(remote_file_name(label)),
                None => task_file(&dir, task),
            };
            let f = File::create(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
            t.writer = Some(BufWriter::new(f));
        }
        if let Some(w) = t.writer.as_mut() {
            let line = serde_json::to_string(record).map_err(|e| Error::Config(e.to_string()))?;
            writeln!(w, "{line}").map_err(|e| Error::io(dir.display().to_string(), e))?;
        }
        count(t);
        Ok(())
    }

    /// Before the commit: joins the tasks' files (each task's last run, in task order) into
    /// `rejects.ndjson`, synced; with `parquet`, writes `rejects.parquet` instead (streamed,
    /// in batches). Nothing is written when no row was rejected. Returns the records joined
    /// (counted in the bytes copied, apart from every count the books keep).
    pub fn finish(&self, parquet: bool) -> Result<u64> {
        let Some(dir) = self.folder() else {
            return Ok(0);
        };
        let mut files: BTreeMap<Task, PathBuf> =
            self.absorbed.lock().map(|a| a.clone()).unwrap_or_default();
        if let Ok(mut tasks) = self.tasks.lock() {
            for (task, t) in tasks.iter_mut() {
                if let Some(mut w) = t.writer.take() {
                    w.flush().map_err(|e| Error::io("rejects", e))?;
                    files.insert(*task, task_file(&dir, *task));
                }
            }
        }
        let files: Vec<PathBuf> = files.into_values().collect();
        if files.is_empty() {
            return Ok(0);
        }
        let name = |p: &std::path::Path| p.display().to_string();
        let joined = dir.join("rejects.ndjson");
        let mut records = 0u64;
        {
            let out = File::create(&joined).map_err(|e| Error::io(name(&joined), e))?;
            let mut out = BufWriter::new(out);
            for f in &files {
                let input = File::open(f).map_err(|e| Error::io(name(f), e))?;
                let mut counted = LineCount {
                    inner: input,
                    lines: &mut records,
                };
                std::io::copy(&mut counted, &mut out).map_err(|e| Error::io(name(&joined), e))?;
            }
            let out = out
                .into_inner()
                .map_err(|e| Error::io(name(&joined), e.into_error()))?;
            out.sync_all().map_err(|e| Error::io(name(&joined), e))?;
        }
        for f in &files {
            std::fs::remove_file(f).map_err(|e| Error::io(name(f), e))?;
        }
        if parquet {
            to_parquet(&joined, &dir.join("rejects.parquet"))?;
            std::fs::remove_file(&joined).map_err(|e| Error::io(name(&joined), e))?;
        }
        Ok(records)
    }

    /// Records a file that could not be read (in `skip` and `reject` modes).
    pub fn file_failed(&self, file: &str, reason: &str) {
        self.file_failed_expecting(file, reason, None);
    }

    /// [`Rejects::file_failed`] for a file whose metadata says how many rows it holds.
    pub fn file_failed_expecting(&self, file: &str, reason: &str, rows_expected: Option<u64>) {
        // A file the client listed but an executor cannot find is most often not on storage
        // every executor shares.
        let missing = ["not found", "no such file"]
            .iter()
            .any(|m| reason.to_ascii_lowercase().contains(m));
        let reason = if missing && self.on_cluster() {
            format!(
                "{reason} (on a cluster executor: every executor must see the inputs at the same path)"
            )
        } else {
            reason.to_string()
        };
        if let Ok(mut f) = self.failed.lock() {
            // A file read in several ranges is reported once.
            if f.iter().any(|known| known.file == file) {
                return;
            }
            f.push(FailedFile {
                file: file.to_string(),
                reason,
                rows_expected,
                rows_read: 0,
            });
        }
    }

    /// Files that could not be read, with the rows read of each before it broke.
    pub fn failed(&self) -> Vec<FailedFile> {
        let counts = self.per_file();
        let mut failed = self.failed.lock().map(|f| f.clone()).unwrap_or_default();
        for f in &mut failed {
            if let Some(c) = counts.get(&f.file) {
                f.rows_read = c.rows_ok + c.rows_rejected + c.rows_skipped;
            }
        }
        failed
    }

    /// Rows of the input rejected so far (each bad row once).
    pub fn rejected(&self) -> u64 {
        self.per_file().values().map(|f| f.rows_rejected).sum()
    }

    /// Rows of the input skipped so far (each bad row once).
    pub fn skipped(&self) -> u64 {
        self.per_file().values().map(|f| f.rows_skipped).sum()
    }

    /// Per-file counts.
    pub fn per_file(&self) -> BTreeMap<String, FileCounts> {
        self.ledger.per_file()
    }
}

/// The columns of the rejects dataset.
pub fn rejects_schema() -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    std::sync::Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("line", DataType::UInt64, false),
        Field::new("byte_offset", DataType::UInt64, false),
        Field::new("column", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("raw_truncated", DataType::Boolean, false),
        Field::new("stage", DataType::Utf8, true),
        Field::new("status", DataType::UInt16, true),
        Field::new("attempts", DataType::UInt32, true),
        Field::new("url", DataType::Utf8, true),
    ]))
}

/// Rewrites an NDJSON rejects file as Parquet (zstd), batch by batch.
fn to_parquet(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::basic::{Compression, ZstdLevel};
    use datafusion::parquet::file::properties::WriterProperties;
    let name = |p: &std::path::Path| p.display().to_string();
    let input = File::open(from).map_err(|e| Error::io(name(from), e))?;
    let reader = datafusion::arrow::json::ReaderBuilder::new(rejects_schema())
        .build(std::io::BufReader::new(input))
        .map_err(|e| Error::file(name(from), e.to_string()))?;
    let output = File::create(to).map_err(|e| Error::io(name(to), e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(output, rejects_schema(), Some(props))
        .map_err(|e| Error::file(name(to), e.to_string()))?;
    for batch in reader {
        let batch = batch.map_err(|e| Error::file(name(from), e.to_string()))?;
        writer
            .write(&batch)
            .map_err(|e| Error::file(name(to), e.to_string()))?;
    }
    let file = writer
        .into_inner()
        .map_err(|e| Error::file(name(to), e.to_string()))?;
    file.sync_all().map_err(|e| Error::io(name(to), e))
}

/// True when `e` is a bad row stopping the job (`--on-error fail`), not a fault of the file.
pub(crate) fn is_bad_row(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError;
    matches!(e.find_root(), DataFusionError::External(inner)
        if matches!(inner.downcast_ref::<Error>(), Some(Error::BadRow(_))))
}

/// True when `e` says a file could not be read: its store (missing, unreachable), its bytes
/// (cut off, not valid compressed data) or, with `columnar`, its encoding (a corrupt
/// Parquet page or ORC stripe). Such a file is reported and the job goes on. Any other
/// error (a fault of sluice itself, a rejects file that cannot be written, memory) stops the
/// job: it must never make the rest of a file vanish as if the file were at fault.
pub(crate) fn is_file_fault(e: &datafusion::error::DataFusionError, columnar: bool) -> bool {
    use datafusion::arrow::error::ArrowError;
    use datafusion::error::DataFusionError as E;
    match e.find_root() {
        E::ObjectStore(_) | E::IoError(_) => true,
        E::ArrowError(inner, _) if matches!(inner.as_ref(), ArrowError::IoError(..)) => true,
        E::External(inner) if inner.downcast_ref::<std::io::Error>().is_some() => true,
        E::External(inner) => columnar && inner.downcast_ref::<Error>().is_none(),
        E::ParquetError(_) | E::ArrowError(..) | E::Execution(_) => columnar,
        _ => false,
    }
}

/// One row as a JSON object (the raw text of a columnar row), capped at [`RAW_CAP`].
pub(crate) fn row_json(row: &datafusion::arrow::record_batch::RecordBatch) -> (String, bool) {
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut out);
        if writer.write(row).and_then(|_| writer.finish()).is_err() {
            return (String::new(), false);
        }
    }
    let text = String::from_utf8_lossy(&out).trim_end().to_string();
    if text.len() > RAW_CAP {
        let mut cut = RAW_CAP;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        (text[..cut].to_string(), true)
    } else {
        (text, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_an_executor_cannot_find_says_where_inputs_must_be() {
        let here = Rejects::new(OnError::Reject);
        here.file_failed("in/x.csv", "Object at location /d/in/x.csv not found");
        assert_eq!(
            here.failed()[0].reason,
            "Object at location /d/in/x.csv not found"
        );
        let there = Rejects::on_executor(7, OnError::Reject, None, "stage-1-task-0".into());
        there.file_failed("in/x.csv", "Object at location /d/in/x.csv not found");
        there.file_failed("in/y.csv", "gzip: corrupt deflate stream");
        let failed = there.failed();
        assert!(
            failed[0].reason.ends_with(
                "(on a cluster executor: every executor must see the inputs at the same path)"
            ),
            "{}",
            failed[0].reason
        );
        assert_eq!(failed[1].reason, "gzip: corrupt deflate stream");
    }

    /// A cluster task that failed leaves no rejects file behind: nothing would ever read
    /// it (no ledger names it) or remove it (on an executor's own scratch folder).
    #[test]
    fn a_failed_tasks_rejects_file_is_discarded() {
        let dir = tempfile::tempdir().expect("tmp");
        let folder = dir.path().join("rejects ~%#é");
        let there = Rejects::on_executor(
            7,
            OnError::Reject,
            Some(folder.clone()),
            "stage-1-task-3".into(),
        );
        let record = RejectRecord {
            file: "in/x.csv".into(),
            line: 2,
            byte_offset: 6,
            column: None,
            kind: "too_many_fields",
            message: "3 fields, 2 expected".into(),
            raw: "1,2,3".into(),
            ..RejectRecord::default()
        };
        there.reject_later(record, Task::default()).expect("reject");
        let file = folder.join(remote_file_name("stage-1-task-3"));
        assert!(file.exists());
        // Another task's file in the same folder is not this task's business.
        let other = folder.join(remote_file_name("stage-1-task-4"));
        std::fs::write(&other, "{}\n").expect("other");
        there.discard_task_file().expect("discard");
        assert!(!file.exists());
        assert!(other.exists());
        // Twice, or with nothing written: nothing to do.
        there.discard_task_file().expect("again");
        let quiet = Rejects::on_executor(8, OnError::Reject, Some(folder), "s-2".into());
        quiet.discard_task_file().expect("nothing written");
    }
}
