//! `CsvScanExec`: sluice's CSV reader, with row-level error handling.
//!
//! Each partition reads its byte ranges (record-aligned, see [`super::split`]) and feeds them
//! to arrow-csv's decoder, the same fast path DataFusion uses. The bytes of the rows in the
//! current batch are kept; when the decoder rejects the batch (a value that does not parse,
//! a row with the wrong field count, invalid UTF-8), the batch is split into rows with
//! `csv-core` and every row is decoded alone: good rows go on, bad rows go to
//! [`Rejects`] with their file, physical line, byte offset, column and reason. Clean data
//! never takes the slow path. Physical line numbers come from counting line breaks in what
//! was read; for a range that starts inside a file the count before it is read once, on the
//! first bad row only.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, UInt64Array};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::csv::reader::{Decoder, ReaderBuilder};
use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::common::{ScalarValue, Statistics};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::object_store::path::Path;
use datafusion::object_store::ObjectStore;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::StatisticsArgs;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;

use super::fast_csv::FastCsv;
use super::framer::{CsvRules, RecordScan};
use crate::ledger::lines::RangeLines;
use crate::ledger::rejects::{
    is_bad_row, is_file_fault, BooksRef, OnError, RejectRecord, Rejects, RAW_CAP,
};
use crate::services::Services;

/// How many times its size a compressed file is guessed to hold, for the optimizer's
/// estimates (text compresses 3-10x with gzip or zstd).
const COMPRESSED_EXPANSION: u64 = 5;

/// One byte range of one file.
#[derive(Debug, Clone)]
pub struct CsvRange {
    /// Object-store location.
    pub location: Path,
    /// The file as shown to the user.
    pub display: String,
    /// First byte (a record start).
    pub start: u64,
    /// One past the last byte (a record end), or the file size.
    pub end: u64,
    /// The file's size.
    pub size: u64,
    /// Bytes at the file's start before its header or first row (title lines), skipped by
    /// the range that starts at 0.
    pub preamble: u64,
    /// Values of the per-file columns.
    pub partition_values: Vec<ScalarValue>,
}

/// The row format a [`CsvScanExec`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowFormat {
    /// CSV, split into rows by `csv-core`.
    Csv,
    /// Newline-delimited JSON: one object per line.
    Json,
}

/// A CSV or JSON decoder behind one interface.
enum AnyDecoder {
    /// The decoder of clean CSV text (arrow's decoder inside it for the rest).
    Fast(Box<FastCsv>),
    /// The decoder, and for a file whose rows end with a delimiter the check of its rows'
    /// widths (the decoder's last column is then that blank field).
    Csv(Box<Decoder>, Option<Box<TrailingCheck>>),
    /// The decoder, the batch size, and whether it only counts rows (no file column is
    /// projected: it decodes a column no object has and drops it).
    Json(datafusion::arrow::json::reader::Decoder, usize, bool),
}

/// Checks the records a decoder of a file whose rows end with a delimiter takes: each must
/// have the file's columns, or one field more (the blank one). The decoder reads that extra
/// field as a last column and allows rows without it, so it cannot tell a row short of a
/// column on its own.
struct TrailingCheck {
    reader: csv_core::Reader,
    /// The file's columns.
    columns: usize,
    /// Fields of the record being framed.
    fields: usize,
    /// A record of another width was framed since the last flush.
    bad: bool,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl TrailingCheck {
    fn new(rules: CsvRules, columns: usize) -> Self {
        TrailingCheck {
            reader: rules.csv_core(),
            columns,
            fields: 0,
            bad: false,
            out: vec![0; 4096],
            ends: vec![0; 256],
        }
    }

    /// Frames `input` (the bytes the decoder took; `eof`: the input is over).
    fn feed(&mut self, mut input: &[u8], eof: bool) {
        use csv_core::ReadRecordResult as R;
        loop {
            // Only the field count matters: the buffers are reused as they fill.
            let (res, nin, _, nend) = self
                .reader
                .read_record(input, &mut self.out, &mut self.ends);
            input = &input[nin..];
            self.fields += nend;
            match res {
                R::InputEmpty if input.is_empty() && !eof => return,
                R::Record => {
                    if self.fields != self.columns && self.fields != self.columns + 1 {
                        self.bad = true;
                    }
                    self.fields = 0;
                }
                R::End => return,
                R::InputEmpty | R::OutputFull | R::OutputEndsFull => {}
            }
        }
    }

    /// An error when a record of another width was taken since the last call.
    fn take(&mut self) -> ArrowResult<()> {
        if std::mem::take(&mut self.bad) {
            return Err(datafusion::arrow::error::ArrowError::CsvError(
                "a row without the file's columns".into(),
            ));
        }
        Ok(())
    }
}

/// A batch without its last column, the blank field rows end with; an error when a row
/// holds a value there (a row too wide).
fn without_trailing_field(batch: RecordBatch) -> ArrowResult<RecordBatch> {
    use datafusion::arrow::array::{Array, AsArray};
    let last = batch.num_columns() - 1;
    let extra = batch.column(last).as_string::<i32>();
    if (0..extra.len()).any(|i| extra.is_valid(i) && !extra.value(i).trim().is_empty()) {
        return Err(datafusion::arrow::error::ArrowError::CsvError(
            "a value after the last column".into(),
        ));
    }
    batch.project(&(0..last).collect::<Vec<_>>())
}

/// The column a row-counting JSON decoder reads: no JSON object has this key.
const COUNT_ONLY_FIELD: &str = "\u{0}sluice_row_count";

type ArrowResult<T> = std::result::Result<T, datafusion::arrow::error::ArrowError>;

impl AnyDecoder {
    /// Takes bytes of `buf` (kept by reference by the fast decoder; empty: the end of input).
    fn decode(&mut self, buf: &bytes::Bytes) -> ArrowResult<usize> {
        match self {
            AnyDecoder::Fast(d) => d.decode(buf),
            AnyDecoder::Csv(d, None) => d.decode(buf),
            AnyDecoder::Csv(d, Some(check)) => {
                let used = d.decode(buf)?;
                check.feed(&buf[..used], buf.is_empty());
                Ok(used)
            }
            AnyDecoder::Json(d, ..) => d.decode(buf),
        }
    }

    /// A batch is complete and must be flushed before more input.
    fn full(&self) -> bool {
        match self {
            AnyDecoder::Fast(d) => d.full(),
            AnyDecoder::Csv(d, _) => d.capacity() == 0,
            AnyDecoder::Json(d, batch, _) => d.len() >= *batch,
        }
    }

    fn flush(&mut self) -> ArrowResult<Option<RecordBatch>> {
        match self {
            AnyDecoder::Fast(d) => d.flush(),
            AnyDecoder::Csv(d, None) => d.flush(),
            AnyDecoder::Csv(d, Some(check)) => {
                let batch = d.flush()?;
                check.take()?;
                batch.map(without_trailing_field).transpose()
            }
            AnyDecoder::Json(d, _, false) => d.flush(),
            // Rows without columns: the row count is all that is kept.
            AnyDecoder::Json(d, _, true) => d.flush()?.map(|b| rows_only(b.num_rows())).transpose(),
        }
    }
}

/// How to read the files.
#[derive(Debug, Clone)]
pub struct CsvScanConfig {
    /// CSV or NDJSON.
    pub format: RowFormat,
    /// Columns in the file, in file order, with the types to parse into.
    pub file_schema: SchemaRef,
    /// Per-file constant columns appended after the file columns.
    pub partition_fields: Vec<FieldRef>,
    /// The first line of each file is a header.
    pub header: bool,
    /// Delimiter, quote, escape and comment characters (CSV).
    pub rules: CsvRules,
    /// Rows end with a delimiter: a blank field after the last column is no value.
    pub trailing: bool,
    /// Values matching this are NULL (besides the empty field).
    pub null_regex: Option<regex::Regex>,
    /// Whole-file compression.
    pub compression: FileCompressionType,
    /// Rows per batch.
    pub batch_size: usize,
    /// File columns to decode (all when `None`); set by [`CsvScanExec::try_new`].
    pub file_projection: Option<Vec<usize>>,
    /// Bytes per ranged read, and reads in flight per range: 1 MiB and 2 for local files;
    /// bigger and deeper for object stores, where every request costs a round trip.
    pub read: (u64, usize),
    /// Longest record in bytes; a longer one is rejected (`record_too_large`) and skipped.
    pub max_record_bytes: u64,
    /// Most bytes a compressed file may decompress to per compressed byte (0: no limit);
    /// see [`BombGuard`].
    pub max_compression_ratio: u64,
    /// Append the origin columns (file, line, byte offset of each row: see
    /// [`crate::ledger::origin`]) after the per-file columns.
    pub origin: bool,
}

impl CsvScanConfig {
    /// The decoder of a range's batches: the fast one where it applies (see
    /// [`super::fast_csv`]), else [`Self::decoder`].
    fn batch_decoder(&self, header: bool) -> ArrowResult<AnyDecoder> {
        match FastCsv::new(self, header) {
            Some(fast) => Ok(AnyDecoder::Fast(Box::new(fast))),
            None => self.decoder(header),
        }
    }

    /// arrow's CSV decoder for a file without a blank field at the end of its rows (the fast
    /// decoder's careful path).
    pub(super) fn arrow_csv(&self, header: bool) -> ArrowResult<Decoder> {
        match self.decoder(header)? {
            AnyDecoder::Csv(d, None) => Ok(*d),
            _ => Err(datafusion::arrow::error::ArrowError::CsvError(
                "no plain CSV decoder for this scan".into(),
            )),
        }
    }

    /// arrow's decoder (CSV or NDJSON): the reference, and the careful path.
    fn decoder(&self, header: bool) -> ArrowResult<AnyDecoder> {
        if self.format == RowFormat::Json {
            let mut schema = match &self.file_projection {
                Some(p) => Arc::new(self.file_schema.project(p)?),
                None => Arc::clone(&self.file_schema),
            };
            // `count(*)`, `SELECT 1`: no column is needed, but every row still counts.
            let count_only = schema.fields().is_empty();
            if count_only {
                schema = Arc::new(Schema::new(vec![datafusion::arrow::datatypes::Field::new(
                    COUNT_ONLY_FIELD,
                    datafusion::arrow::datatypes::DataType::Null,
                    true,
                )]));
            }
            let batch = self.batch_size.max(1);
            // Values of other kinds in a string column (`1`, `true`, `{"a":1}`) meet at
            // string, as the README promises: numbers and booleans as written, nested
            // values as JSON text.
            let d = datafusion::arrow::json::ReaderBuilder::new(schema)
                .with_batch_size(batch)
                .with_coerce_primitive(true)
                .build_decoder()?;
            return Ok(AnyDecoder::Json(d, batch, count_only));
        }
        let columns = self.file_schema.fields().len();
        let mut schema = Arc::clone(&self.file_schema);
        let mut projection = self.file_projection.clone();
        if self.trailing {
            // The blank field after the last column, read as one more column (rows without
            // it are allowed, the check tells them from rows short of a column).
            let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
            fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
                "\u{0}sluice_trailing",
                datafusion::arrow::datatypes::DataType::Utf8,
                true,
            )));
            schema = Arc::new(Schema::new(fields));
            let mut cols = projection.unwrap_or_else(|| (0..columns).collect());
            cols.push(columns);
            projection = Some(cols);
        }
        let mut b = self.rules.arrow(
            ReaderBuilder::new(schema)
                .with_header(header)
                .with_batch_size(self.batch_size)
                .with_truncated_rows(self.trailing),
        );
        if let Some(r) = &self.null_regex {
            b = b.with_null_regex(r.clone());
        }
        if let Some(p) = projection {
            b = b.with_projection(p);
        }
        let check = self
            .trailing
            .then(|| Box::new(TrailingCheck::new(self.rules, columns)));
        Ok(AnyDecoder::Csv(Box::new(b.build_decoder()), check))
    }

    fn splitter(&self) -> csv_core::Reader {
        self.rules.csv_core()
    }
}

/// Reads CSV ranges into batches, sending bad rows to a [`Rejects`] collector.
#[derive(Debug)]
pub struct CsvScanExec {
    pub(crate) config: Arc<CsvScanConfig>,
    pub(crate) store_url: ObjectStoreUrl,
    pub(crate) partitions: Vec<Vec<CsvRange>>,
    pub(crate) projection: Option<Vec<usize>>,
    /// The rejects and ledger it reports to (in the session's services).
    pub(crate) books: BooksRef,
    /// This node's id in the row ledger.
    pub(crate) scan_id: u64,
    /// The partition of the whole scan this node's partition 0 is (a scan cut into one node
    /// per partition for a cluster keeps its tasks apart).
    pub(crate) partition_offset: usize,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl CsvScanExec {
    /// A scan of `partitions` (each a list of ranges read in order).
    pub fn try_new(
        mut config: CsvScanConfig,
        store_url: ObjectStoreUrl,
        partitions: Vec<Vec<CsvRange>>,
        projection: Option<Vec<usize>>,
        books: BooksRef,
    ) -> Result<Self> {
        let mut fields: Vec<FieldRef> = config.file_schema.fields().iter().cloned().collect();
        fields.extend(config.partition_fields.iter().cloned());
        if config.origin {
            fields.extend(crate::ledger::origin::fields());
        }
        let full = Schema::new(fields);
        // Only the file columns the plan needs are parsed (their values alone are checked).
        let n_file = config.file_schema.fields().len();
        // arrow-csv sizes its field offsets as rows per batch x columns up front: a file with
        // 10,000 columns would take 8,192 x 10,000 offsets per batch. Keep a batch near a
        // million fields, whatever the width.
        config.batch_size = config
            .batch_size
            .min((MAX_BATCH_FIELDS / n_file.max(1)).max(1));
        config.file_projection = projection.as_ref().map(|p| {
            let mut cols: Vec<usize> = p.iter().copied().filter(|&i| i < n_file).collect();
            cols.sort_unstable();
            cols.dedup();
            cols
        });
        let schema = Arc::new(match &projection {
            Some(p) => full.project(p)?,
            None => full,
        });
        let cache = crate::plan::streaming(
            Arc::clone(&schema),
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
        );
        Ok(CsvScanExec {
            config: Arc::new(config),
            store_url,
            partitions,
            projection,
            books,
            scan_id: crate::ledger::next_scan_id(),
            partition_offset: 0,
            schema,
            cache,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl CsvScanExec {
    /// The same scan under ledger id `id` (a plan decoded elsewhere keeps its scan's id).
    pub(crate) fn with_scan_id(mut self, id: u64) -> Self {
        self.scan_id = id;
        self
    }

    /// The same scan, its partition 0 being partition `offset` of the whole scan.
    pub(crate) fn with_partition_offset(mut self, offset: usize) -> Self {
        self.partition_offset = offset;
        self
    }

    /// The same scan cut into one single-partition scan per partition (same ranges, same
    /// ledger id): for engines that can restrict only their own leaves to a task's
    /// partitions (see [`crate::cluster`]).
    pub fn one_per_partition(&self) -> Result<Vec<CsvScanExec>> {
        self.partitions
            .iter()
            .enumerate()
            .map(|(p, ranges)| {
                Ok(CsvScanExec::try_new(
                    self.config.as_ref().clone(),
                    self.store_url.clone(),
                    vec![ranges.clone()],
                    self.projection.clone(),
                    self.books,
                )?
                .with_scan_id(self.scan_id)
                .with_partition_offset(self.partition_offset + p))
            })
            .collect()
    }

    /// Every byte range read, as (file, start, end, file size).
    pub fn ranges(&self) -> Vec<(String, u64, u64, u64)> {
        self.partitions
            .iter()
            .flatten()
            .map(|r| (r.display.clone(), r.start, r.end, r.size))
            .collect()
    }
}

impl DisplayAs for CsvScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let ranges: usize = self.partitions.iter().map(Vec::len).sum();
        write!(
            f,
            "CsvScanExec: partitions={}, ranges={ranges}, on_error={:?}",
            self.partitions.len(),
            self.books.mode
        )
    }
}

impl ExecutionPlan for CsvScanExec {
    fn name(&self) -> &str {
        "CsvScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::plan::leaf(self, children)
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    /// The bytes of the ranges read, scaled to the columns decoded (a compressed file counts
    /// five times its size): an estimate that lets the optimizer broadcast a small table.
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let mut bytes: u64 = crate::plan::partition_items(&self.partitions, args.partition())
            .iter()
            .map(|r| r.end.saturating_sub(r.start))
            .sum();
        if self.config.compression.is_compressed() {
            bytes = bytes.saturating_mul(COMPRESSED_EXPANSION);
        }
        let columns = self.config.file_schema.fields().len() as u64;
        if let (Some(read), true) = (&self.config.file_projection, columns > 0) {
            // At least a byte per row's worth: a count(*) still reads every row.
            bytes = (bytes.saturating_mul(read.len().max(1) as u64) / columns).max(1);
        }
        Ok(crate::plan::estimated_statistics(&self.schema, bytes))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let store = context.runtime_env().object_store(&self.store_url)?;
        let ranges = self.partitions.get(partition).cloned().unwrap_or_default();
        let config = Arc::clone(&self.config);
        let rejects =
            Services::of_task(&context)?.books_for(&self.books, context.session_config())?;
        let projection = self.projection.clone();
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let scan = self.scan_id;
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&self.schema), 2);
        let tx = builder.tx();
        let task = crate::ledger::rejects::Task {
            node: scan,
            partition: self.partition_offset + partition,
        };
        builder.spawn(async move {
            rejects.begin(task).map_err(DataFusionError::from)?;
            for range in ranges {
                let at = crate::ledger::ReadAt {
                    file: range.display.clone(),
                    start: range.start,
                    scan,
                    task,
                };
                rejects.ledger.begin(&at);
                let mut out = Output {
                    tx: &tx,
                    range: &range,
                    at,
                    config: &config,
                    rejects: &rejects,
                    store: &store,
                    projection: projection.as_deref(),
                    metrics: &metrics,
                    lines: RangeLines::default(),
                    base: None,
                };
                let read = async {
                    let mut reader = RangeReader::new(&config, &range)?;
                    let bytes = read_stream(&store, &range, &config).await?;
                    futures::pin_mut!(bytes);
                    while let Some(chunk) = bytes.next().await {
                        if !out.send(reader.feed(&chunk?)?).await? {
                            return Ok(None);
                        }
                    }
                    let more = out.send(reader.finish()?).await?;
                    Ok::<_, DataFusionError>(more.then(|| reader.framed()))
                };
                let result = read.await;
                match result {
                    // Read to its end: the framer's count goes to the ledger.
                    Ok(Some(framed)) => rejects.ledger.framed(&out.at, framed),
                    // The consumer went away (a LIMIT was reached): what was read counts.
                    Ok(None) => {
                        return Ok(());
                    }
                    Err(e) if is_bad_row(&e) || !is_file_fault(&e, false) => return Err(e),
                    Err(e) if rejects.mode == OnError::Fail => {
                        return Err(DataFusionError::External(Box::new(
                            crate::error::Error::file(&range.display, super::infer::read_error(&e)),
                        )))
                    }
                    // A file that breaks while being read (cut off, unreadable): the rows
                    // before the break are kept and counted, the file is reported, and the
                    // job goes on.
                    Err(e) => rejects.file_failed(&range.display, &super::infer::read_error(&e)),
                }
            }
            Ok(())
        });
        Ok(builder.build())
    }
}

/// Rows decoded together on the slow path before a refused block is halved.
const RECOVER_BLOCK: usize = 256;

/// Most fields (rows x columns) in one decoded batch.
const MAX_BATCH_FIELDS: usize = 1 << 20;

/// Ranged reads of local files: 1 MiB, the next one fetched while one is decoded.
pub const LOCAL_READ: (u64, usize) = (1 << 20, 2);

/// Ranged reads of remote objects: 8 MiB, three fetched ahead (each GET is a round trip).
pub const REMOTE_READ: (u64, usize) = (8 << 20, 4);

/// The bytes of a range, decompressed, fetched in 1 MiB ranged reads, one ahead.
async fn read_stream(
    store: &Arc<dyn ObjectStore>,
    range: &CsvRange,
    config: &CsvScanConfig,
) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes>>> {
    let store = Arc::clone(store);
    let location = range.location.clone();
    let (start, end) = (range.start, range.end.min(range.size));
    let (chunk, ahead) = config.read;
    let chunk = chunk.max(1);
    let pieces: Vec<(u64, u64)> = (start..end)
        .step_by(chunk as usize)
        .map(|from| (from, (from + chunk).min(end)))
        .collect();
    // The next pieces are fetched while the current one is decoded.
    let raw = futures::stream::iter(pieces)
        .map(move |(from, to)| {
            let store = Arc::clone(&store);
            let location = location.clone();
            async move {
                crate::storage::pooled::get_range(store.as_ref(), &location, from..to)
                    .await
                    .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))
            }
        })
        .buffered(ahead.max(1));
    if !config.compression.is_compressed() || config.max_compression_ratio == 0 {
        return config.compression.convert_stream(raw.boxed());
    }
    // Compressed bytes are counted as the decoder takes them (after the read-ahead), so
    // the ratio is exact to within one read.
    let guard = Arc::new(BombGuard::new(config.max_compression_ratio));
    let taken = Arc::clone(&guard);
    let raw = raw
        .inspect(move |r| {
            if let Ok(b) = r {
                taken.take_in(b.len());
            }
        })
        .boxed();
    let out = config.compression.convert_stream(raw)?;
    Ok(out.map(move |r| r.and_then(|b| guard.give_out(b))).boxed())
}

/// Decompressed bytes a file may produce before the ratio is checked: small files with a
/// high ratio (a header and a few repeated rows) are no threat.
pub const BOMB_FLOOR: u64 = 64 << 20;

/// Stops a decompression bomb: once a file has decompressed to more than [`BOMB_FLOOR`]
/// bytes, it may not exceed `ratio` bytes out per compressed byte in. The error is an I/O
/// error of the file, so the file is a failed file, named with the reason.
#[derive(Debug)]
pub struct BombGuard {
    ratio: u64,
    input: std::sync::atomic::AtomicU64,
    output: std::sync::atomic::AtomicU64,
}

impl BombGuard {
    /// A guard allowing `ratio` bytes out per byte in.
    pub fn new(ratio: u64) -> BombGuard {
        BombGuard {
            ratio,
            input: Default::default(),
            output: Default::default(),
        }
    }

    fn take_in(&self, n: usize) {
        self.input
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn give_out(&self, b: bytes::Bytes) -> datafusion::error::Result<bytes::Bytes> {
        use std::sync::atomic::Ordering::Relaxed;
        let out = self.output.fetch_add(b.len() as u64, Relaxed) + b.len() as u64;
        let input = self.input.load(Relaxed).max(1);
        if out > BOMB_FLOOR && out / input > self.ratio {
            return Err(DataFusionError::IoError(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "decompresses to more than {} times its compressed size ({out} bytes from {input}): a decompression bomb? (--max-compression-ratio raises the limit, 0 removes it)",
                    self.ratio
                ),
            )));
        }
        Ok(b)
    }
}

/// The bytes handed to the decoder since the last good batch, kept as shared slices of the
/// chunks read (no copy on the fast path; joined only when a batch must be re-read row by row).
#[derive(Debug, Default)]
struct Pending {
    chunks: Vec<bytes::Bytes>,
    len: usize,
}

impl Pending {
    fn push(&mut self, b: bytes::Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.chunks.push(b);
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// Line breaks before each of `positions` (increasing, relative to the first byte),
    /// counting on from `base`.
    fn line_breaks_at(&self, positions: impl Iterator<Item = usize>, base: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let (mut count, mut chunk, mut chunk_start, mut done) = (base, 0, 0, 0);
        for p in positions {
            while let Some(c) = self.chunks.get(chunk) {
                let until = p.saturating_sub(chunk_start).min(c.len());
                if until > done {
                    count += memchr::memchr_iter(b'\n', &c[done..until]).count() as u64;
                    done = until;
                }
                if until < c.len() {
                    break; // `p` lies in this chunk
                }
                chunk_start += c.len();
                chunk += 1;
                done = 0;
            }
            out.push(count);
        }
        out
    }

    fn line_breaks(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| memchr::memchr_iter(b'\n', c).count() as u64)
            .sum()
    }

    fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for c in &self.chunks {
            v.extend_from_slice(c);
        }
        v
    }
}

/// Output of a reader step: good batches and bad rows (lines relative to the range).
#[derive(Default)]
struct Step {
    batches: Vec<(RecordBatch, Option<RowsAt>)>,
    bad: Vec<RejectRecord>,
}

/// Where the rows of a batch start (scans that carry the origin columns): line breaks
/// before each row since the range's start, and its byte offset in the file.
#[derive(Debug, Default)]
struct RowsAt {
    lines: Vec<u64>,
    offsets: Vec<u64>,
}

/// Where one range's rows go: good batches downstream, bad rows to the rejects.
struct Output<'a> {
    tx: &'a tokio::sync::mpsc::Sender<Result<RecordBatch>>,
    range: &'a CsvRange,
    /// The range and scan, for the ledger.
    at: crate::ledger::ReadAt,
    config: &'a CsvScanConfig,
    rejects: &'a Rejects,
    store: &'a Arc<dyn ObjectStore>,
    projection: Option<&'a [usize]>,
    metrics: &'a BaselineMetrics,
    lines: RangeLines,
    /// Line breaks in the file before the range (counted once, when needed).
    base: Option<u64>,
}

impl Output<'_> {
    /// Passes good rows on and bad rows to the rejects; false when the consumer went away.
    async fn send(&mut self, step: Step) -> Result<bool> {
        for mut bad in step.bad {
            if bad.line != 0 && self.range.start > 0 {
                // Counted while reading (compressed input, or a scan carrying origins):
                // from the range's start.
                bad.line += self.base().await?;
            } else if bad.line == 0 {
                // Uncompressed input: the line comes from the byte offset, counted on demand.
                bad.line = 1 + self
                    .lines
                    .lines_before(
                        &self.rejects.lines,
                        self.store,
                        &self.range.location,
                        &self.range.display,
                        bad.byte_offset,
                    )
                    .await?;
            }
            self.rejects
                .bad_row(bad, &self.at)
                .map_err(DataFusionError::from)?;
        }
        for (batch, at) in step.batches {
            if batch.num_rows() == 0 {
                continue;
            }
            let rows = batch.num_rows() as u64;
            let origin = match at {
                Some(at) if self.config.origin => Some((self.base().await?, at)),
                _ => None,
            };
            let batch = with_partition_values(
                batch,
                self.range,
                self.config,
                self.projection,
                origin.as_ref(),
            )?;
            // Counted as passed on even if the consumer drops it (LIMIT).
            self.rejects.count_ok(&self.at, rows);
            self.metrics.record_output(rows as usize);
            if self.tx.send(Ok(batch)).await.is_err() {
                return Ok(false); // the consumer went away
            }
        }
        Ok(true)
    }
    /// Line breaks in the file before the range: none for a range at the start; otherwise
    /// counted once (see [`RangeLines`]).
    async fn base(&mut self) -> Result<u64> {
        if self.range.start == 0 {
            return Ok(0);
        }
        if let Some(base) = self.base {
            return Ok(base);
        }
        let base = RangeLines::default()
            .lines_before(
                &self.rejects.lines,
                self.store,
                &self.range.location,
                &self.range.display,
                self.range.start,
            )
            .await?;
        self.base = Some(base);
        Ok(base)
    }
}

fn with_partition_values(
    batch: RecordBatch,
    range: &CsvRange,
    config: &CsvScanConfig,
    projection: Option<&[usize]>,
    origin: Option<&(u64, RowsAt)>,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let n_file = config.file_schema.fields().len();
    let decoded = batch.num_columns();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for v in &range.partition_values {
        columns.push(v.to_array_of_size(n)?);
    }
    let mut fields: Vec<FieldRef> = batch.schema().fields().iter().cloned().collect();
    fields.extend(config.partition_fields.iter().cloned());
    if config.origin {
        let (base, at) = origin.ok_or_else(|| {
            DataFusionError::Internal("rows without their origin in a scan carrying it".into())
        })?;
        if at.lines.len() != n || at.offsets.len() != n {
            return Err(DataFusionError::Internal(format!(
                "{} rows with {} origins",
                n,
                at.lines.len()
            )));
        }
        columns.push(ScalarValue::Utf8(Some(range.display.clone())).to_array_of_size(n)?);
        columns.push(Arc::new(UInt64Array::from_iter_values(
            at.lines.iter().map(|l| 1 + base + l),
        )));
        columns.push(Arc::new(UInt64Array::from(at.offsets.clone())));
        fields.extend(crate::ledger::origin::fields());
    }
    // With no column projected (`count(*)`) the batch still carries its row count.
    let all = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )?;
    let Some(projection) = projection else {
        return Ok(all);
    };
    // Map table column indices onto [decoded file columns..., partition columns...].
    // Where each file column sits among the decoded ones (one pass, not a search per column).
    let decoded_at: Option<Vec<Option<usize>>> = config.file_projection.as_deref().map(|cols| {
        let mut at = vec![None; n_file];
        for (pos, &c) in cols.iter().enumerate() {
            if let Some(slot) = at.get_mut(c) {
                *slot = Some(pos);
            }
        }
        at
    });
    let positions = projection
        .iter()
        .map(|&i| {
            if i < n_file {
                match &decoded_at {
                    Some(at) => at.get(i).copied().flatten(),
                    None => Some(i),
                }
            } else {
                Some(decoded + (i - n_file))
            }
            .ok_or_else(|| DataFusionError::Internal(format!("column {i} was not decoded")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(all.project(&positions)?)
}

/// JSON nested deeper than this makes a line a bad row (`too_deep`): arrow's JSON decoder
/// recurses once per level when it turns a nested value into text, and a line nested
/// 10,000 deep would overflow the stack. Below serde_json's own limit (127 levels; enrich
/// responses, schema sampling), so every line that passes can also be parsed there.
pub const MAX_JSON_DEPTH: usize = 100;

/// Tracks JSON nesting across chunks of NDJSON, line by line, to find the lines arrow's
/// decoder must not see in bulk: lines nested too deep (its recursion), and lines that are
/// not one value (two values on a line, or a value spread over lines), which the bulk
/// decoder would turn into two rows or one row of two lines. Those go the row-by-row path,
/// where each line is one record: decoded alone, or rejected.
#[derive(Debug, Default, Clone)]
pub(crate) struct DepthScan {
    depth: usize,
    in_string: bool,
    escape: bool,
    /// Values started at the top level of the current line.
    values: u32,
    /// The current line went deeper than [`MAX_JSON_DEPTH`].
    line_too_deep: bool,
    /// The current line is not one value (or continues one from the line before).
    line_irregular: bool,
    /// Some line scanned went deeper than [`MAX_JSON_DEPTH`].
    any_too_deep: bool,
}

impl DepthScan {
    /// Scans `bytes`; true when a line touched by them is nested too deep or is not one
    /// JSON value.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> bool {
        let mut flagged = self.line_too_deep || self.line_irregular;
        for &b in bytes {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                } else if b == b'\n' {
                    // A line break inside a string is not JSON: the line ends here anyway.
                    self.end_line();
                    flagged |= self.line_irregular;
                }
                continue;
            }
            match b {
                b'"' => {
                    self.top_value();
                    self.in_string = true;
                }
                b'{' | b'[' => {
                    self.top_value();
                    self.depth += 1;
                    if self.depth > MAX_JSON_DEPTH {
                        self.line_too_deep = true;
                        self.any_too_deep = true;
                    }
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b'\n' => self.end_line(),
                _ => {}
            }
            flagged |= self.line_too_deep || self.line_irregular;
        }
        flagged
    }

    fn top_value(&mut self) {
        if self.depth == 0 {
            self.values += 1;
            if self.values > 1 {
                self.line_irregular = true;
            }
        }
    }

    /// A line break: a line ending inside a value makes the next line irregular too.
    fn end_line(&mut self) {
        let open = self.depth > 0 || self.in_string;
        *self = DepthScan {
            line_irregular: open,
            any_too_deep: self.any_too_deep,
            ..DepthScan::default()
        };
    }
}

/// The framer of a scan's records: csv-core's rules for CSV, lines for NDJSON.
fn framer(config: &CsvScanConfig, start: u64) -> RecordScan {
    match config.format {
        RowFormat::Csv => RecordScan::csv(config.rules, start),
        RowFormat::Json => RecordScan::ndjson(start),
    }
    // Record starts give rows their line and offset: kept only when rows carry them.
    .keeping_starts(config.origin)
}

/// Bytes handed to the decoder before a batch is cut short: arrow's string arrays use
/// 32-bit offsets, so one batch must stay well below 2 GiB of text.
const MAX_BATCH_BYTES: usize = 256 << 20;

/// True when a line of `raw` is nested deeper than [`MAX_JSON_DEPTH`].
fn json_too_deep(raw: &[u8]) -> bool {
    let mut d = DepthScan::default();
    d.scan(raw);
    d.any_too_deep
}

/// Decodes one range, keeping the bytes of the current batch for the slow path.
struct RangeReader {
    config: CsvScanConfig,
    display: String,
    decoder: AnyDecoder,
    /// Bytes handed to the decoder since the last good batch.
    pending: Pending,
    /// File offset of `pending[0]`.
    pending_offset: u64,
    /// Line breaks in the range before `pending` (counted only for compressed input, whose
    /// offsets cannot be re-read; otherwise lines come from offsets on the error path).
    lines_before_pending: u64,
    /// Count line breaks while reading (compressed input).
    eager_lines: bool,
    /// `pending` starts with the header line.
    header_pending: bool,
    /// JSON nesting (NDJSON only): lines nested too deep never reach the decoder.
    depth: Option<DepthScan>,
    /// Record boundaries, for the record size limit.
    size: RecordScan,
    /// Inside a record longer than the limit: its bytes are dropped up to its end.
    skipping: bool,
    /// The range starts with a header line (a framed record that is no row).
    header: bool,
    /// Bytes of the file's preamble (title lines before the header) still to drop.
    preamble_left: u64,
}

impl RangeReader {
    fn new(config: &CsvScanConfig, range: &CsvRange) -> Result<Self> {
        let header = config.header && range.start == 0 && config.format == RowFormat::Csv;
        // The preamble is dropped before the first record (only the range at 0 has it).
        let preamble = if range.start == 0 { range.preamble } else { 0 };
        Ok(RangeReader {
            config: config.clone(),
            display: range.display.clone(),
            decoder: config.batch_decoder(header)?,
            pending: Pending::default(),
            pending_offset: range.start + preamble,
            lines_before_pending: 0,
            eager_lines: config.compression.is_compressed() || config.origin,
            header_pending: header,
            depth: (config.format == RowFormat::Json).then(DepthScan::default),
            size: framer(config, range.start + preamble),
            skipping: false,
            header,
            preamble_left: preamble,
        })
    }

    /// Rows the range holds by the framer's count (the header is no row), independent of
    /// the decoder: the ledger checks it against the rows passed on, rejected and skipped.
    fn framed(&self) -> u64 {
        self.size.records.saturating_sub(u64::from(self.header))
    }

    fn feed(&mut self, chunk: &bytes::Bytes) -> Result<Step> {
        let mut step = Step::default();
        self.feed_into(chunk.clone(), &mut step)?;
        Ok(step)
    }

    fn feed_into(&mut self, chunk: bytes::Bytes, step: &mut Step) -> Result<()> {
        if self.preamble_left > 0 {
            // Title lines: no records, but their line breaks count for line numbers.
            let n = (self.preamble_left as usize).min(chunk.len());
            if self.eager_lines {
                self.lines_before_pending += memchr::memchr_iter(b'\n', &chunk[..n]).count() as u64;
            }
            self.preamble_left -= n as u64;
            if n == chunk.len() {
                return Ok(());
            }
            return self.feed_into(chunk.slice(n..), step);
        }
        if self.skipping {
            // The rest of a record over the limit: dropped, never held.
            let end = self.size.end_in(&chunk);
            let skipped = end.unwrap_or(chunk.len());
            if self.eager_lines {
                self.lines_before_pending +=
                    memchr::memchr_iter(b'\n', &chunk[..skipped]).count() as u64;
            }
            self.pending_offset += skipped as u64;
            if end.is_none() {
                return Ok(());
            }
            self.skipping = false;
            // The record over the limit was rejected when it was found.
            self.size.take_upto(self.pending_offset);
            if let Some(d) = &mut self.depth {
                *d = DepthScan::default();
            }
            return self.feed_into(chunk.slice(skipped..), step);
        }
        let chunk_start = self.size.pos;
        if let Some(at) = self.size.over(&chunk, self.config.max_record_bytes) {
            return self.reject_oversized(chunk, chunk_start, at, step);
        }
        // A line nested too deep takes the row-by-row path, where it is rejected.
        if self.depth.as_mut().is_some_and(|d| d.scan(&chunk)) {
            self.recover(&chunk, false, step)?;
            return Ok(());
        }
        let mut pos = 0;
        while pos < chunk.len() {
            match self.decoder.decode(&chunk.slice(pos..)) {
                Ok(n) => {
                    self.pending.push(chunk.slice(pos..pos + n));
                    pos += n;
                    // Many big rows: the batch is cut short before its text nears 2 GiB.
                    if self.decoder.full() || self.pending.len() > MAX_BATCH_BYTES {
                        self.flush(step, false)?;
                    } else if n == 0 {
                        break;
                    }
                }
                Err(_) => {
                    self.recover(&chunk[pos..], false, step)?;
                    pos = chunk.len();
                }
            }
        }
        Ok(())
    }

    /// A record grew past the limit at `chunk[at]`: the rows before it are decoded, the
    /// record is rejected with its first bytes, and the reader skips to its end.
    fn reject_oversized(
        &mut self,
        chunk: bytes::Bytes,
        chunk_start: u64,
        at: usize,
        step: &mut Step,
    ) -> Result<()> {
        let record_start = self.size.record_start;
        let mut all = self.pending.to_vec();
        all.extend_from_slice(&chunk[..at]);
        let before = (record_start.saturating_sub(self.pending_offset) as usize).min(all.len());
        let (prefix, head) = all.split_at(before);
        self.pending.clear();
        if !prefix.is_empty() {
            self.recover(prefix, true, step)?;
        }
        self.decoder = self.config.batch_decoder(false)?;
        self.header_pending = false;
        let line = if self.eager_lines {
            1 + self.lines_before_pending
        } else {
            0
        };
        if self.eager_lines {
            self.lines_before_pending += memchr::memchr_iter(b'\n', head).count() as u64;
        }
        let max = self.config.max_record_bytes;
        step.bad.push(RejectRecord {
            file: self.display.clone(),
            line,
            byte_offset: record_start,
            column: None,
            kind: "record_too_large",
            message: format!("the record is longer than {max} bytes (--max-record-bytes)"),
            raw: String::from_utf8_lossy(&head[..head.len().min(RAW_CAP)]).into_owned(),
            raw_truncated: true,
            ..RejectRecord::default()
        });
        self.pending_offset = chunk_start + at as u64;
        self.skipping = true;
        self.feed_into(chunk.slice(at..), step)
    }

    fn finish(&mut self) -> Result<Step> {
        let mut step = Step::default();
        if self.size.in_comment() {
            // A last comment line without a line break: csv-core's record reader would make
            // it a (bad) record at the end of input; with its line break it is a comment.
            self.feed_into(bytes::Bytes::from_static(b"\n"), &mut step)?;
        }
        self.size.finish();
        match self.decoder.decode(&bytes::Bytes::new()) {
            Ok(_) => {
                if !self.flush(&mut step, true)? {
                    self.pending.clear();
                }
            }
            Err(_) => self.recover(&[], true, &mut step)?,
        }
        if !self.pending.is_empty() {
            // A partial record the decoder held at the end: read it as the last row.
            self.recover(&[], true, &mut step)?;
        }
        Ok(step)
    }

    /// Takes the decoder's rows; false when it held none. `at_eof`: no more input follows.
    fn flush(&mut self, step: &mut Step, at_eof: bool) -> Result<bool> {
        match self.decoder.flush() {
            Ok(Some(batch)) => {
                // The decoder must have made one row of every record framed in these bytes;
                // otherwise (an NDJSON line holding two values, or a value spread over
                // lines) the rows are read one record at a time.
                let end = self.pending_offset + self.pending.len() as u64;
                let framed = self.size.count_upto(end);
                let rows = batch.num_rows() as u64 + u64::from(self.header_pending && framed > 0);
                if rows != framed {
                    self.recover(&[], at_eof, step)?;
                    return Ok(true);
                }
                let at = self.config.origin.then(|| self.rows_at_pending(framed));
                self.size.take_upto(end);
                step.batches.push((batch, at));
                if self.eager_lines {
                    self.lines_before_pending += self.pending.line_breaks();
                }
                self.pending_offset += self.pending.len() as u64;
                self.header_pending = false;
                self.pending.clear();
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(_) => self.recover(&[], at_eof, step).map(|()| true),
        }
    }

    /// Where the first `framed` records of `pending` start, the header left out.
    fn rows_at_pending(&self, framed: u64) -> RowsAt {
        let skip = usize::from(self.header_pending && framed > 0);
        let offsets: Vec<u64> = self.size.starts(framed as usize).skip(skip).collect();
        let lines = self.pending.line_breaks_at(
            offsets
                .iter()
                .map(|o| o.saturating_sub(self.pending_offset) as usize),
            self.lines_before_pending,
        );
        RowsAt { lines, offsets }
    }

    /// The slow path: splits `pending + extra` into rows and decodes each alone.
    fn recover(&mut self, extra: &[u8], at_eof: bool, step: &mut Step) -> Result<()> {
        let mut data = self.pending.to_vec();
        data.extend_from_slice(extra);
        self.pending.clear();
        let (rows, done) = match self.config.format {
            RowFormat::Csv => split_rows(&data, &self.config, at_eof),
            RowFormat::Json => split_lines(&data, at_eof),
        };
        // Rows as (start, end, in_quote), the header dropped and CRLF remnants trimmed.
        let rows: Vec<(usize, usize, bool)> = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| !(*i == 0 && self.header_pending))
            .map(|(_, &(start, end, q))| {
                // csv-core ends a CRLF row at the CR: the LF opens the next span.
                let start = start
                    + data[start..end]
                        .iter()
                        .take_while(|b| **b == b'\n' || **b == b'\r')
                        .count();
                (start, end, q)
            })
            .filter(|(start, end, _)| start < end)
            .collect();
        let mut good = Vec::new();
        let cfg = &self.config;
        // NDJSON lines that are not one value (two values, a value spread over lines) are
        // never decoded in bulk, where their rows would not match their lines.
        let irregular: Vec<bool> = match cfg.format {
            RowFormat::Json => {
                let mut d = DepthScan::default();
                rows.iter().map(|&(s, e, _)| d.scan(&data[s..e])).collect()
            }
            RowFormat::Csv => Vec::new(),
        };
        let span = |from: usize, to: usize| {
            // A single line is decoded alone: one line, one record, a row or a reject.
            if to - from > 1
                && irregular
                    .get(from..to)
                    .is_some_and(|r| r.iter().any(|x| *x))
            {
                return Err(datafusion::arrow::error::ArrowError::JsonError(
                    "a line that is not one JSON value".into(),
                ));
            }
            decode_rows(cfg, &data[rows[from].0..rows[to - 1].1], to - from)
        };
        // Blocks of rows are decoded together; a block the decoder refuses is halved until
        // each bad row stands alone. A batch with k bad rows costs about n + k log n rows
        // decoded (re-decoding the rest after every bad row was quadratic), and no row is
        // ever dropped unaccounted.
        let mut todo: Vec<(usize, usize)> = (0..rows.len())
            .step_by(RECOVER_BLOCK)
            .map(|from| (from, (from + RECOVER_BLOCK).min(rows.len())))
            .rev()
            .collect();
        // The rows decoded, in order (scans carrying origins).
        let mut good_rows: Vec<usize> = Vec::new();
        while let Some((from, to)) = todo.pop() {
            match span(from, to) {
                Ok(batch) => {
                    good.extend(batch);
                    if cfg.origin {
                        good_rows.extend(from..to);
                    }
                }
                Err(e) if to - from == 1 => step.bad.push(self.reject(&data, rows[from], &e)),
                Err(_) => {
                    let mid = from + (to - from) / 2;
                    todo.push((mid, to));
                    todo.push((from, mid));
                }
            }
        }
        if !good.is_empty() {
            let schema = good[0].schema();
            let at = cfg.origin.then(|| {
                let mut at = RowsAt::default();
                let (mut lines, mut counted) = (self.lines_before_pending, 0);
                for r in good_rows {
                    let start = rows[r].0;
                    lines += memchr::memchr_iter(b'\n', &data[counted..start]).count() as u64;
                    counted = start;
                    at.lines.push(lines);
                    at.offsets.push(self.pending_offset + start as u64);
                }
                at
            });
            step.batches.push((concat_batches(&schema, &good)?, at));
        }
        // The records framed in what was read are matched.
        self.size.take_upto(self.pending_offset + done as u64);
        // Keep the unfinished tail for the next chunk, with a fresh decoder.
        if self.eager_lines {
            self.lines_before_pending += memchr::memchr_iter(b'\n', &data[..done]).count() as u64;
        }
        self.pending_offset += done as u64;
        self.header_pending = false;
        self.decoder = self.config.batch_decoder(false)?;
        if done < data.len() {
            // The tail is one partial row (every complete row was taken above): the decoder
            // takes it whole and waits for the rest. Should it refuse, the next flush takes
            // the slow path with these same bytes.
            let tail = bytes::Bytes::copy_from_slice(&data[done..]);
            // A partial line already nested too deep waits for its end outside the decoder.
            if !self.depth.as_ref().is_some_and(|d| d.line_too_deep) {
                let _ = self.decoder.decode(&tail);
            }
            self.pending.push(tail);
        }
        Ok(())
    }

    /// The reject record of row `(start, end, in_quote)` of `data` (the pending bytes).
    fn reject(
        &self,
        data: &[u8],
        (start, end, in_quote): (usize, usize, bool),
        err: &datafusion::arrow::error::ArrowError,
    ) -> RejectRecord {
        // 0 = resolved from the byte offset later (uncompressed input).
        let line = if self.eager_lines {
            1 + self.lines_before_pending
                + memchr::memchr_iter(b'\n', &data[..start]).count() as u64
        } else {
            0
        };
        self.classify(
            &data[start..end],
            in_quote,
            err,
            line,
            self.pending_offset + start as u64,
        )
    }

    fn classify(
        &self,
        raw: &[u8],
        in_quote: bool,
        err: &datafusion::arrow::error::ArrowError,
        line: u64,
        offset: u64,
    ) -> RejectRecord {
        let columns = self.config.file_schema.fields().len();
        let text = trim_terminator(raw);
        let (kind, column, message) = if std::str::from_utf8(text).is_err() {
            (
                "invalid_utf8",
                None,
                "the row is not valid UTF-8".to_string(),
            )
        } else if self.config.format == RowFormat::Json && json_too_deep(text) {
            (
                "too_deep",
                None,
                format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"),
            )
        } else if self.config.format == RowFormat::Json {
            match serde_json::from_slice::<serde_json::Value>(text) {
                Err(e) => ("malformed_json", None, format!("not valid JSON: {e}")),
                Ok(v) if !v.is_object() => {
                    ("malformed_json", None, "not a JSON object".to_string())
                }
                Ok(_) if not_null_column(&err.to_string()).is_some() => {
                    null_in_not_null(not_null_column(&err.to_string()).flatten())
                }
                Ok(_) => {
                    let (column, what) = json_decode_error(&err.to_string());
                    ("type_mismatch", column, what)
                }
            }
        } else if in_quote {
            (
                "unterminated_quote",
                None,
                "a quoted value is not closed before the end of the file".to_string(),
            )
        } else {
            let fields = count_fields(text, &self.config);
            if fields > columns {
                (
                    "too_many_fields",
                    None,
                    format!("expected {columns} fields, found {fields}"),
                )
            } else if fields < columns {
                (
                    "too_few_fields",
                    None,
                    format!("expected {columns} fields, found {fields}"),
                )
            } else if let Some(column) = not_null_column(&err.to_string()) {
                null_in_not_null(column)
            } else {
                let (index, what) = csv_parse_error(&err.to_string());
                let column = index.and_then(|i| {
                    self.config
                        .file_schema
                        .fields()
                        .get(i)
                        .map(|f| f.name().clone())
                });
                ("type_mismatch", column, what)
            }
        };
        let truncated = raw.len() > RAW_CAP;
        RejectRecord {
            file: self.display.clone(),
            line,
            byte_offset: offset,
            column,
            kind,
            message,
            raw: String::from_utf8_lossy(&text[..text.len().min(RAW_CAP)]).into_owned(),
            raw_truncated: truncated,
            ..RejectRecord::default()
        }
    }
}

/// The column index and a short description of an arrow-csv decode error ("Error while
/// parsing value 'abc' as type 'Int64' for column 2 at line 7..." -> `(Some(2), "cannot
/// parse 'abc' as type 'Int64'")`). arrow-csv reports these as `ArrowError::ParseError(String)`
/// only, so the text is read; `tests::arrow_error_texts_are_read` pins the format.
fn csv_parse_error(msg: &str) -> (Option<usize>, String) {
    let index = msg
        .split(" for column ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok());
    let what = msg
        .split("Error while parsing value ")
        .nth(1)
        .and_then(|rest| rest.split(" for column ").next())
        .map(|s| format!("cannot parse {s}"))
        .unwrap_or_else(|| msg.to_string());
    (index, what)
}

/// The field and the reason of an arrow-json decode error ("... whilst decoding field 'n':
/// failed to parse \"x\" as Int64" -> `(Some("n"), "failed to parse \"x\" as Int64")`);
/// text only in arrow-json too, pinned by `tests::arrow_error_texts_are_read`.
fn json_decode_error(msg: &str) -> (Option<String>, String) {
    let column = msg
        .split("whilst decoding field '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .map(str::to_string);
    let what = msg.rsplit(": ").next().unwrap_or(msg).to_string();
    (column, what)
}

/// For arrow's "null in a non-nullable column" errors: `Some(column name, when named)`.
fn not_null_column(msg: &str) -> Option<Option<String>> {
    if !msg.contains("non-nullable") {
        return None;
    }
    // arrow-csv: "Column 'id' is declared as non-nullable ..."; arrow-json: "... non-nullable
    // StructArray child: Field { name: \"id\", ... }".
    let quoted = |after: &str, close: char| {
        msg.split(after)
            .nth(1)
            .and_then(|rest| rest.split(close).next())
            .map(str::to_string)
    };
    Some(
        quoted("Column '", '\'')
            .or_else(|| quoted("name: \"", '"'))
            .or_else(|| quoted("Field { \"", '"')),
    )
}

fn null_in_not_null(column: Option<String>) -> (&'static str, Option<String>, String) {
    let message = format!(
        "null in NOT NULL column '{}'",
        column.as_deref().unwrap_or("?")
    );
    ("null_in_not_null", column, message)
}

fn trim_terminator(raw: &[u8]) -> &[u8] {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    raw.strip_suffix(b"\r").unwrap_or(raw)
}

/// Splits `data` into rows `(start, end, ends_inside_quotes)`; returns them and how many
/// bytes they cover. Without `at_eof`, an unterminated last row is left for later.
pub(crate) fn split_rows(
    data: &[u8],
    config: &CsvScanConfig,
    at_eof: bool,
) -> (Vec<(usize, usize, bool)>, usize) {
    let mut reader = config.splitter();
    let mut out = vec![0u8; 1 << 16];
    let mut ends = vec![0usize; 1024];
    let mut rows = Vec::new();
    let mut pos = 0;
    let mut row_start = 0;
    let mut done = 0;
    loop {
        let input = &data[pos..];
        let (res, nin, _, _) = reader.read_record(input, &mut out, &mut ends);
        pos += nin;
        match res {
            csv_core::ReadRecordResult::Record => {
                rows.push((row_start, pos, false));
                row_start = pos;
                done = pos;
            }
            csv_core::ReadRecordResult::OutputFull => out.resize(out.len() * 2, 0),
            csv_core::ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
            csv_core::ReadRecordResult::InputEmpty => {
                if !at_eof {
                    break;
                }
                // Signal the end of input to finish the last row.
                let (res, _, _, _) = reader.read_record(&[], &mut out, &mut ends);
                if matches!(res, csv_core::ReadRecordResult::Record) && row_start < data.len() {
                    let unterminated = data[row_start..]
                        .iter()
                        .filter(|&&b| b == config.rules.quote)
                        .count()
                        % 2
                        == 1;
                    rows.push((row_start, data.len(), unterminated));
                }
                done = data.len();
                break;
            }
            csv_core::ReadRecordResult::End => {
                done = data.len();
                break;
            }
        }
        if pos >= data.len() && !at_eof {
            break;
        }
    }
    (rows, done)
}

fn count_fields(row: &[u8], config: &CsvScanConfig) -> usize {
    let mut reader = config.splitter();
    let mut out = vec![0u8; row.len() + 16];
    let mut ends = vec![0usize; row.len() + 2];
    let (_, _, _, nend) = reader.read_record(row, &mut out, &mut ends);
    let (_, _, _, nend2) = reader.read_record(&[], &mut out, &mut ends[nend..]);
    nend + nend2
}

/// Splits JSON lines: every line holding more than white space is a row.
fn split_lines(data: &[u8], at_eof: bool) -> (Vec<(usize, usize, bool)>, usize) {
    let mut rows = Vec::new();
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', data) {
        if data[start..nl].iter().any(|b| !b.is_ascii_whitespace()) {
            rows.push((start, nl + 1, false));
        }
        start = nl + 1;
    }
    if at_eof {
        if data[start..].iter().any(|b| !b.is_ascii_whitespace()) {
            rows.push((start, data.len(), false));
        }
        return (rows, data.len());
    }
    (rows, start)
}

/// A JSON line whose objects or lists sit in string columns, with those values replaced
/// by their JSON text (values of several kinds in one column meet at string); `None` when
/// there is nothing to replace.
fn nested_as_text(config: &CsvScanConfig, raw: &[u8]) -> Option<Vec<u8>> {
    use datafusion::arrow::datatypes::DataType;
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(raw).ok()?;
    let mut changed = false;
    let columns: Vec<usize> = match &config.file_projection {
        Some(p) => p.clone(),
        None => (0..config.file_schema.fields().len()).collect(),
    };
    for i in columns {
        let field = config.file_schema.field(i);
        if !matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            continue;
        }
        if let Some(v) = object.get_mut(field.name()) {
            if v.is_object() || v.is_array() {
                *v = serde_json::Value::String(v.to_string());
                changed = true;
            }
        }
    }
    if !changed {
        return None;
    }
    let mut fixed = serde_json::to_vec(&object).ok()?;
    fixed.push(b'\n');
    Some(fixed)
}

/// A batch of `n` rows without columns.
fn rows_only(n: usize) -> ArrowResult<RecordBatch> {
    RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )
}

/// Decodes `n` rows in one batch.
fn decode_rows(
    config: &CsvScanConfig,
    raw: &[u8],
    n: usize,
) -> std::result::Result<Option<RecordBatch>, datafusion::arrow::error::ArrowError> {
    // One row per record, or the records are read one at a time.
    match decode_rows_unchecked(config, raw, n)? {
        Some(b) if b.num_rows() != n => Err(datafusion::arrow::error::ArrowError::ParseError(
            format!("{} rows decoded from {n} records", b.num_rows()),
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
thread_local! {
    /// Rows handed to `decode_rows` on this thread (the slow path's cost, for tests).
    static ROWS_DECODED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn decode_rows_unchecked(
    config: &CsvScanConfig,
    raw: &[u8],
    n: usize,
) -> std::result::Result<Option<RecordBatch>, datafusion::arrow::error::ArrowError> {
    #[cfg(test)]
    ROWS_DECODED.with(|c| c.set(c.get() + n));
    let mut c = config.clone();
    c.batch_size = n.max(1);
    let mut d = c.decoder(false)?;
    let raw = bytes::Bytes::copy_from_slice(raw);
    if let AnyDecoder::Json(..) = d {
        if json_too_deep(&raw) {
            return Err(datafusion::arrow::error::ArrowError::JsonError(format!(
                "JSON nested deeper than {MAX_JSON_DEPTH} levels"
            )));
        }
        // A JSON row with a wrong type makes the decoder stop at it: decode in one call.
        let decoded = d.decode(&raw).and_then(|used| {
            if used < raw.len() && raw[used..].iter().any(|b| !b.is_ascii_whitespace()) {
                return Err(datafusion::arrow::error::ArrowError::JsonError(
                    "trailing data after the last row".into(),
                ));
            }
            d.flush()
        });
        return match decoded {
            // One row with an object or a list in a string column: that value as JSON text.
            Err(e) if n == 1 => match nested_as_text(config, &raw) {
                Some(fixed) => decode_rows(config, &fixed, 1),
                None => Err(e),
            },
            other => other,
        };
    }
    let mut pos = 0;
    while pos < raw.len() {
        let used = d.decode(&raw.slice(pos..))?;
        if used == 0 {
            break;
        }
        pos += used;
    }
    d.decode(&bytes::Bytes::new())?;
    d.flush()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The arrow error texts sluice reads (arrow has no typed variants for them): a new
    /// arrow that words them differently fails here, not in users' rejects.
    #[test]
    fn arrow_error_texts_are_read() {
        use datafusion::arrow::datatypes::{DataType, Field};
        let schema = |nullable: bool| {
            Arc::new(Schema::new(vec![
                Field::new("a", DataType::Utf8, true),
                Field::new("n", DataType::Int64, nullable),
            ]))
        };
        let csv_error = |nullable: bool, data: &'static str| {
            datafusion::arrow::csv::ReaderBuilder::new(schema(nullable))
                .build(std::io::Cursor::new(data))
                .expect("reader")
                .find_map(|b| b.err())
                .expect("an error")
                .to_string()
        };
        let json_error = |nullable: bool, data: &'static str| {
            datafusion::arrow::json::ReaderBuilder::new(schema(nullable))
                .build(std::io::Cursor::new(data))
                .expect("reader")
                .find_map(|b| b.err())
                .expect("an error")
                .to_string()
        };
        let msg = csv_error(true, "x,1\ny,abc\n");
        assert_eq!(
            csv_parse_error(&msg),
            (Some(1), "cannot parse 'abc' as type 'Int64'".to_string()),
            "{msg}"
        );
        let msg = csv_error(false, "x,1\ny,\n");
        assert_eq!(not_null_column(&msg), Some(Some("n".to_string())), "{msg}");
        let msg = json_error(true, "{\"a\": \"x\", \"n\": \"abc\"}\n");
        let (column, what) = json_decode_error(&msg);
        assert_eq!(column.as_deref(), Some("n"), "{msg}");
        assert!(what.contains("abc"), "{msg}");
        let msg = json_error(false, "{\"a\": \"x\"}\n");
        assert_eq!(not_null_column(&msg), Some(Some("n".to_string())), "{msg}");
        // Messages of other kinds are not taken for these.
        assert_eq!(
            not_null_column("Csv error: incorrect number of fields"),
            None
        );
    }

    /// A scan's settings for the tests: comma-delimited with a header and `#` comments.
    pub(crate) fn config(format: RowFormat) -> CsvScanConfig {
        CsvScanConfig {
            format,
            file_schema: Arc::new(Schema::empty()),
            partition_fields: Vec::new(),
            header: true,
            rules: CsvRules {
                delimiter: b',',
                quote: b'"',
                escape: None,
                comment: Some(b'#'),
            },
            trailing: false,
            null_regex: None,
            compression: FileCompressionType::UNCOMPRESSED,
            batch_size: 8192,
            file_projection: None,
            read: LOCAL_READ,
            max_record_bytes: 64,
            max_compression_ratio: 0,
            origin: false,
        }
    }

    /// Record ends found by the scanner, fed in chunks of `step` bytes.
    fn ends(data: &[u8], step: usize, format: RowFormat) -> Vec<u64> {
        let mut scan = framer(&config(format), 0);
        let mut out = Vec::new();
        for chunk in data.chunks(step) {
            let mut at = 0;
            while let Some(n) = scan.end_in(&chunk[at..]) {
                at += n;
                out.push(scan.pos);
            }
        }
        out
    }

    // regression: a quote inside an unquoted field (`5" screen`) or a comment line made a
    // naive scanner believe everything after it was one quoted record.
    #[test]
    fn record_ends_follow_csv_core() {
        let data = b"a,b\n5\" screen,x\n# it's \"odd\n\"q\"\"\nq\",y\nlast,z";
        // The comment line (ending at 28) is a record to the scanner, skipped by csv-core.
        let want = vec![4, 16, 28, 38];
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(ends(data, step, RowFormat::Csv), want, "step {step}");
        }
        // What csv-core itself says.
        let mut reader = csv_core::ReaderBuilder::new().comment(Some(b'#')).build();
        let (mut out, mut bounds) = (vec![0u8; 256], vec![0usize; 16]);
        let (mut pos, mut seen) = (0usize, Vec::new());
        loop {
            let (res, nin, _, _) = reader.read_record(&data[pos..], &mut out, &mut bounds);
            pos += nin;
            match res {
                csv_core::ReadRecordResult::Record => seen.push(pos as u64),
                csv_core::ReadRecordResult::End => break,
                csv_core::ReadRecordResult::InputEmpty if pos >= data.len() => {
                    let _ = reader.read_record(&[], &mut out, &mut bounds);
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(seen, [4, 16, 38]);
    }

    /// Records the framer counts, fed in chunks of `step` bytes.
    fn framed(data: &[u8], step: usize, config: &CsvScanConfig) -> u64 {
        let mut scan = framer(config, 0);
        for chunk in data.chunks(step) {
            assert_eq!(scan.over(chunk, u64::MAX / 2), None);
        }
        scan.finish();
        scan.records
    }

    // The ledger's record count must be csv-core's (the decoder's framing), counted by the
    // `csv` crate here: line endings of every kind, blank lines, comments, quotes, escapes.
    #[test]
    fn the_framer_counts_the_records_csv_core_finds() {
        let cases: &[&[u8]] = &[
            b"a,b\n1,2\n",
            b"a,b\r\n1,2\r\n3,4",
            b"a,b\r1,2\r3,4\r",
            b"a,b\n\n\n1,2\n\r\n\r3,4\n\n",
            b"a,b\n# note, \"odd\n1,\"x\ny\"\n# tail\n",
            b"a,b\n\"q\"\"\n\",2\n5\" screen,3\n\"open,4\n",
            b"a,b\n1,\"esc \\\" still\"\n2,\r\n",
            b"a,b\n,\n,,\n \n",
            b"a,b,c\n1,\"x,\ny\",3\nz,w\"v,\"k\r\nl\"\n\"q\",\"\"\n",
            b"",
            b"\n\n",
        ];
        for escape in [None, Some(b'\\')] {
            let mut cfg = config(RowFormat::Csv);
            cfg.rules.escape = escape;
            for data in cases {
                let want = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .comment(Some(b'#'))
                    .escape(escape)
                    .double_quote(escape.is_none())
                    .from_reader(*data)
                    .byte_records()
                    .count() as u64;
                for step in [1, 2, 3, 5, 1000] {
                    assert_eq!(
                        framed(data, step, &cfg),
                        want,
                        "{:?} escape {escape:?} step {step}",
                        String::from_utf8_lossy(data)
                    );
                }
            }
        }
    }

    #[test]
    fn ndjson_records_are_lines_with_content() {
        let data = b"{\"a\": 1}\n   \n\n{\"a\":\n 2}\r\n{} {}\n  {\"b\": \"x\\ny\"}";
        for step in [1, 4, 100] {
            assert_eq!(
                framed(data, step, &config(RowFormat::Json)),
                5,
                "step {step}"
            );
        }
    }

    // A line after one that ended inside a value is read on its own: a valid object there
    // is a row (one line, one record), the broken line before it a reject.
    #[test]
    fn each_ndjson_line_is_one_record_around_a_broken_one() {
        use datafusion::arrow::datatypes::{DataType, Field};
        let mut cfg = config(RowFormat::Json);
        cfg.max_record_bytes = 1 << 20;
        cfg.file_schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let data = b"{\"a\": 1}\n{\"a\":\n{\"a\": 3}\n{\"a\": 4} {\"a\": 5}\n{\"a\": 6}\n";
        let range = CsvRange {
            location: Path::from("x.ndjson"),
            display: "x.ndjson".into(),
            start: 0,
            end: data.len() as u64,
            size: data.len() as u64,
            preamble: 0,
            partition_values: Vec::new(),
        };
        let mut reader = RangeReader::new(&cfg, &range).expect("reader");
        let steps = [
            reader.feed(&bytes::Bytes::from_static(data)).expect("feed"),
            reader.finish().expect("finish"),
        ];
        let good: usize = steps
            .iter()
            .flat_map(|s| &s.batches)
            .map(|(b, _)| b.num_rows())
            .sum();
        let bad: usize = steps.iter().map(|s| s.bad.len()).sum();
        assert_eq!((good, bad, reader.framed()), (3, 2, 5));
    }

    #[test]
    fn lines_that_are_not_one_value_are_flagged() {
        let flagged = |line: &[u8]| DepthScan::default().scan(line);
        assert!(!flagged(b"{\"a\": [1, {\"b\": \"}{\"}]}\n{\"a\": 2}\n"));
        assert!(flagged(b"{\"a\": 1} {\"a\": 2}\n"));
        assert!(flagged(b"{\"a\":\n 1}\n"));
        assert!(flagged(b"\"text\" {}\n"));
        // The line after one that ended inside a value is flagged when scanned on its own.
        let mut d = DepthScan::default();
        assert!(d.scan(b"{\"a\": 1,\n"));
        assert!(d.scan(b"\"b\": 2}\n"));
        assert!(!d.scan(b"{\"c\": 3}\n"));
    }

    // regression: every bad row made the slow path decode the rest of the batch again, so a
    // batch of n rows with k bad ones cost k x n decoded rows.
    #[test]
    fn bad_rows_cost_the_slow_path_about_n_log_n() {
        use datafusion::arrow::datatypes::{DataType, Field};
        let mut cfg = config(RowFormat::Csv);
        cfg.rules.comment = None;
        cfg.max_record_bytes = 1 << 20;
        cfg.file_schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let n = 8192;
        let mut data = b"a,b\n".to_vec();
        for i in 0..n {
            let a = if i % 2 == 0 {
                i.to_string()
            } else {
                format!("x{i}")
            };
            data.extend_from_slice(format!("{a},v{i}\n").as_bytes());
        }
        let range = CsvRange {
            location: Path::from("x.csv"),
            display: "x.csv".into(),
            start: 0,
            end: data.len() as u64,
            size: data.len() as u64,
            preamble: 0,
            partition_values: Vec::new(),
        };
        ROWS_DECODED.with(|c| c.set(0));
        let mut reader = RangeReader::new(&cfg, &range).expect("reader");
        let mut steps = vec![reader.feed(&bytes::Bytes::from(data)).expect("feed")];
        steps.push(reader.finish().expect("finish"));
        let good: usize = steps
            .iter()
            .flat_map(|s| &s.batches)
            .map(|(b, _)| b.num_rows())
            .sum();
        let bad: usize = steps.iter().map(|s| s.bad.len()).sum();
        assert_eq!((good, bad), (n / 2, n / 2));
        assert_eq!(reader.framed(), n as u64);
        let decoded = ROWS_DECODED.with(std::cell::Cell::get);
        // n rows, each bad one found by halving blocks of 256: about n x (1 + log2 256).
        assert!(decoded < 12 * n, "{decoded} rows decoded for {n}");
    }

    #[test]
    fn a_record_over_the_limit_is_found_in_any_chunking() {
        let mut data = b"a,b\n1,x\n".to_vec();
        data.extend_from_slice(b"2,\"");
        data.extend(std::iter::repeat_n(b'y', 100));
        data.extend_from_slice(b"\n\"\n3,z\n");
        for step in [1, 5, 64, 1000] {
            let mut scan = framer(&config(RowFormat::Csv), 0);
            let mut found = None;
            let mut offset = 0;
            for chunk in data.chunks(step) {
                if let Some(at) = scan.over(chunk, 64) {
                    found = Some((scan.record_start, offset + at));
                    break;
                }
                offset += chunk.len();
            }
            assert_eq!(found, Some((8, 8 + 64)), "step {step}");
        }
    }
}
