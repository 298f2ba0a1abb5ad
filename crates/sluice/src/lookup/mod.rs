//! Broadcast lookups (`[[lookup]]`): a small table read once into memory, indexed by its key,
//! and joined to every row of every partition from that one shared copy — the columnar form
//! of `sc.broadcast(dict)` plus a UDF.
//!
//! The key columns of both sides are encoded with arrow's row format (any types, several
//! columns, NULL never matches), the lookup side once into a hash index, the row side per
//! batch; the brought columns are then gathered with one `take` per column.

pub mod spec;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::Serialize;

pub use spec::{How, KeyPair, LookupSpec, OnDuplicate, OnMissing};

use crate::error::column_list;
use crate::error::Error;
use crate::ledger::rejects::Task;
use crate::ledger::rejects::{RejectRecord, Rejects};
use crate::source::{Format, OnError, ReadOptions, Source};
use crate::stage::{BatchMap, Mapped, StageDef};
use crate::stage_spec::StageSpec;

/// Default most bytes a lookup may hold in memory.
pub const DEFAULT_MAX_LOOKUP_BYTES: u64 = 1 << 30;

/// A lookup loaded into memory, shared read-only by every partition.
#[derive(Debug)]
pub struct Lookup {
    /// The stage's name.
    pub name: String,
    keys: Vec<KeyPair>,
    key_types: Vec<DataType>,
    /// Encodes key columns (both sides) into comparable bytes.
    converter: Arc<RowConverter>,
    /// The brought columns (renamed with the prefix), one row per lookup row.
    brought: RecordBatch,
    index: Arc<HashMap<Box<[u8]>, u32>>,
    how: How,
    on_missing: OnMissing,
    /// Counters for the report.
    pub stats: LookupStats,
}

/// Live counters of a lookup.
#[derive(Debug, Default)]
pub struct LookupStats {
    /// Files read.
    pub files: Vec<datafusion::object_store::path::Path>,
    /// Bytes of the files.
    pub file_bytes: u64,
    /// Rows of the lookup (distinct keys after `on_duplicate`).
    pub rows: u64,
    /// Bytes it holds in memory.
    pub memory_bytes: u64,
    /// Most bytes held while it was read (checked against `max_lookup_bytes`).
    pub peak_bytes: u64,
    /// The limit.
    pub max_bytes: u64,
    /// Rows that found their key.
    pub matched: AtomicU64,
    /// Rows that did not.
    pub missing: AtomicU64,
    /// Rows whose key does not convert to the lookup key's type unchanged (part of
    /// `missing`).
    pub unconvertible: AtomicU64,
}

/// What a lookup did (in `--report-json` under `lookups`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct LookupReport {
    /// The stage.
    pub name: String,
    /// Files read.
    pub files: u64,
    /// Bytes of the files.
    pub file_bytes: u64,
    /// Bytes actually fetched from those files during the whole job (schema sample plus one
    /// read: the lookup is read once, never per partition).
    pub bytes_read: u64,
    /// Rows of the lookup (distinct keys after `on_duplicate`).
    pub rows: u64,
    /// Bytes it holds in memory (the broadcast copy shared by every partition).
    pub memory_bytes: u64,
    /// Most bytes held while it was read (what `max_lookup_bytes` limits).
    pub peak_bytes: u64,
    /// Rows that found their key.
    pub matched: u64,
    /// Rows that did not (kept with NULLs, rejected or dropped, per `how`/`on_missing`).
    pub missing: u64,
    /// Rows of `missing` whose key has no value of the lookup key's type: `1.7` for a
    /// `BIGINT` key, `abc` for a number. Such a key never matches (SQL would not find
    /// `1.7 = 1` either); no value is truncated or guessed.
    pub unconvertible: u64,
}

impl LookupReport {
    /// Adds what a cluster's task matched with its own copy of the lookup (the table
    /// itself is the same in every task: its sizes are kept).
    pub fn add_matches(&mut self, task: &LookupReport) {
        self.matched += task.matched;
        self.missing += task.missing;
        self.unconvertible += task.unconvertible;
    }
}

impl Lookup {
    /// Reads the lookup's files (strictly: a bad row is an error), checks its size and keys
    /// and builds the index.
    pub async fn load(ctx: &SessionContext, spec: &LookupSpec) -> crate::error::Result<Lookup> {
        let fail = |m: String| Error::Config(format!("lookup '{}': {m}", spec.name));
        let (how, on_missing, on_duplicate) = spec.modes()?;
        let max = spec.max_lookup_bytes.unwrap_or(DEFAULT_MAX_LOOKUP_BYTES);
        let mut options = ReadOptions {
            paths: spec.paths.clone(),
            storage: spec.storage.clone(),
            on_error: OnError::Fail,
            // A dimension table broadcast from a database: one snapshot, one partition.
            database: crate::db::DbOptions {
                table: spec.table.clone(),
                query: spec.query.clone(),
                ..crate::db::DbOptions::default()
            },
            ..ReadOptions::default()
        };
        options.format = spec
            .format
            .as_deref()
            .map(str::parse::<Format>)
            .transpose()?;
        options.csv.delimiter = spec
            .delimiter
            .as_deref()
            .map(|d| crate::storage::format::parse_char_option("delimiter", d))
            .transpose()?;
        let source = Source::open(ctx, options).await.map_err(|e| match e {
            Error::Config(m) => fail(m),
            other => fail(other.to_string()),
        })?;
        let too_big = |bytes: u64, what: &str| {
            fail(format!(
                "{what} {bytes} bytes, more than max_lookup_bytes ({max}): join it in a [[transform]] SQL step instead (or raise max_lookup_bytes)"
            ))
        };
        if source.total_bytes() > max {
            return Err(too_big(source.total_bytes(), "its files hold"));
        }
        let df = source.to_dataframe(ctx)?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        for k in &spec.keys_right() {
            if schema.index_of(k).is_err() {
                return Err(fail(format!(
                    "the lookup has no column '{k}' (columns: {})",
                    column_list(&schema)
                )));
            }
        }
        let mut stream = df.execute_stream().await?;
        let mut batches = Vec::new();
        let mut held = 0u64;
        while let Some(b) = stream.next().await {
            let b = b.map_err(|e| fail(crate::source::infer::clean_engine_error(&e)))?;
            held += b.get_array_memory_size() as u64;
            if held > max {
                return Err(too_big(held, "it takes more than"));
            }
            batches.push(b);
        }
        let all = concat_batches(&schema, &batches)?;

        // Key index: row-encoded keys -> lookup row.
        let key_arrays: Vec<ArrayRef> = spec
            .on
            .iter()
            .map(|k| Ok(Arc::clone(all.column(schema.index_of(&k.right)?))))
            .collect::<Result<_>>()?;
        let key_types: Vec<DataType> = key_arrays.iter().map(|a| a.data_type().clone()).collect();
        let converter = converter(&key_types)?;
        let rows = converter.convert_columns(&key_arrays)?;
        let mut index: HashMap<Box<[u8]>, u32> = HashMap::with_capacity(all.num_rows());
        let mut keep: Vec<u32> = Vec::with_capacity(all.num_rows());
        for i in 0..all.num_rows() {
            if key_arrays.iter().any(|a| a.is_null(i)) {
                continue; // a NULL key never matches
            }
            let key: Box<[u8]> = rows.row(i).as_ref().into();
            match index.get(&key) {
                None => {
                    index.insert(key, keep.len() as u32);
                    keep.push(i as u32);
                }
                Some(&at) => match on_duplicate {
                    OnDuplicate::First => {}
                    OnDuplicate::Last => keep[at as usize] = i as u32,
                    OnDuplicate::Error => {
                        return Err(fail(format!(
                            "the key {} appears more than once (set on_duplicate = \"first\" or \"last\")",
                            describe_key(&spec.on, &key_arrays, i, |k| &k.right)
                        )))
                    }
                },
            }
        }
        // The brought columns, in index order.
        let key_names = spec.keys_right();
        let wanted: Vec<String> = match &spec.columns {
            Some(cols) => cols.clone(),
            None => schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|n| !key_names.contains(n))
                .collect(),
        };
        let prefix = spec.prefix.clone().unwrap_or_default();
        let rows_taken = UInt32Array::from(keep);
        let mut fields = Vec::with_capacity(wanted.len());
        let mut columns = Vec::with_capacity(wanted.len());
        for c in &wanted {
            let i = schema.index_of(c).map_err(|_| {
                fail(format!(
                    "the lookup has no column '{c}' (columns: {})",
                    column_list(&schema)
                ))
            })?;
            let f = schema.field(i);
            fields.push(Field::new(
                format!("{prefix}{c}"),
                f.data_type().clone(),
                true,
            ));
            columns.push(take(all.column(i).as_ref(), &rows_taken, None)?);
        }
        let brought = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(rows_taken.len())),
        )?;
        let memory = brought.get_array_memory_size() as u64
            + index.keys().map(|k| k.len() as u64 + 16).sum::<u64>();
        if memory > max {
            return Err(too_big(memory, "it takes"));
        }
        let stats = LookupStats {
            files: source
                .files
                .iter()
                .map(|f| crate::source::infer::store_path(&f.input))
                .collect::<crate::error::Result<_>>()?,
            file_bytes: source.total_bytes(),
            rows: brought.num_rows() as u64,
            memory_bytes: memory,
            peak_bytes: held.max(memory),
            max_bytes: max,
            ..LookupStats::default()
        };
        Ok(Lookup {
            name: spec.name.clone(),
            keys: spec.on.clone(),
            key_types,
            converter: Arc::new(converter),
            brought,
            index: Arc::new(index),
            how,
            on_missing,
            stats,
        })
    }

    /// The same table (shared, not copied) with its own match counters, at zero.
    pub fn with_fresh_counts(&self) -> Lookup {
        Lookup {
            name: self.name.clone(),
            keys: self.keys.clone(),
            key_types: self.key_types.clone(),
            converter: Arc::clone(&self.converter),
            brought: self.brought.clone(),
            index: Arc::clone(&self.index),
            how: self.how,
            on_missing: self.on_missing,
            stats: LookupStats {
                files: self.stats.files.clone(),
                file_bytes: self.stats.file_bytes,
                rows: self.stats.rows,
                memory_bytes: self.stats.memory_bytes,
                peak_bytes: self.stats.peak_bytes,
                max_bytes: self.stats.max_bytes,
                ..LookupStats::default()
            },
        }
    }

    /// Loads the lookup `key` names once per process: a cluster executor runs many tasks of
    /// one job, each of which needs the lookup (`key` names the job's session and the
    /// spec). Each caller gets the shared table with counters of its own. The tables of the
    /// last few keys are kept.
    pub async fn load_shared(
        key: String,
        load: impl std::future::Future<Output = crate::error::Result<Lookup>>,
    ) -> crate::error::Result<Lookup> {
        type Loaded = Arc<tokio::sync::OnceCell<Arc<Lookup>>>;
        static LOADED: std::sync::Mutex<std::collections::VecDeque<(String, Loaded)>> =
            std::sync::Mutex::new(std::collections::VecDeque::new());
        const KEEP: usize = 8;
        let cell: Loaded = {
            let mut all = LOADED
                .lock()
                .map_err(|_| Error::Config("lookup cache poisoned".into()))?;
            match all.iter().find(|(k, _)| *k == key) {
                Some((_, cell)) => Arc::clone(cell),
                None => {
                    let cell = Loaded::default();
                    all.push_back((key, Arc::clone(&cell)));
                    if all.len() > KEEP {
                        all.pop_front();
                    }
                    cell
                }
            }
        };
        // On the heap: loading is a deep future, and executor threads have small stacks.
        let load = Box::pin(load);
        let table = cell
            .get_or_try_init(|| async { load.await.map(Arc::new) })
            .await?;
        Ok(table.with_fresh_counts())
    }

    /// The report, with the bytes `reads` counted for the lookup's files.
    pub fn report(&self, reads: &crate::storage::counting::ReadCounter) -> LookupReport {
        LookupReport {
            name: self.name.clone(),
            files: self.stats.files.len() as u64,
            file_bytes: self.stats.file_bytes,
            bytes_read: self.stats.files.iter().map(|p| reads.bytes_of(p)).sum(),
            rows: self.stats.rows,
            memory_bytes: self.stats.memory_bytes,
            peak_bytes: self.stats.peak_bytes,
            matched: self.stats.matched.load(Ordering::Relaxed),
            missing: self.stats.missing.load(Ordering::Relaxed),
            unconvertible: self.stats.unconvertible.load(Ordering::Relaxed),
        }
    }

    /// The columns the lookup adds.
    pub fn brought_fields(&self) -> Vec<Field> {
        self.brought
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect()
    }
}

impl LookupSpec {
    fn keys_right(&self) -> Vec<String> {
        self.on.iter().map(|k| k.right.clone()).collect()
    }
}

fn converter(types: &[DataType]) -> Result<RowConverter> {
    Ok(RowConverter::new(
        types.iter().map(|t| SortField::new(t.clone())).collect(),
    )?)
}

/// `category='books'` (or `a='x', b=2`) for messages.
/// Per row, true when `converted` (a cast of `original`) lost the value: a value became
/// NULL (`abc` to a number), or a number does not come back unchanged (`1.7` to `BIGINT`,
/// a decimal's digits to a float). Text that parses is taken as the value it spells (`01` is
/// 1, as in SQL).
fn lossy(original: &ArrayRef, converted: &ArrayRef) -> Result<Vec<bool>> {
    let n = original.len();
    let mut out: Vec<bool> = (0..n)
        .map(|i| original.is_valid(i) && converted.is_null(i))
        .collect();
    let from = original.data_type();
    if from.is_numeric() {
        let back = cast(converted, from)?;
        let differs = datafusion::arrow::compute::kernels::cmp::distinct(original, &back)?;
        for (i, o) in out.iter_mut().enumerate() {
            *o |= original.is_valid(i) && differs.value(i);
        }
    }
    Ok(out)
}

fn describe_key(
    on: &[KeyPair],
    arrays: &[ArrayRef],
    row: usize,
    side: impl Fn(&KeyPair) -> &String,
) -> String {
    on.iter()
        .zip(arrays)
        .map(|(k, a)| {
            let v = cast(a, &DataType::Utf8)
                .ok()
                .and_then(|s| {
                    s.as_any()
                        .downcast_ref::<datafusion::arrow::array::StringArray>()
                        .filter(|s| !s.is_null(row))
                        .map(|s| format!("'{}'", s.value(row)))
                })
                .unwrap_or_else(|| "NULL".to_string());
            format!("{}={v}", side(k))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A loaded lookup as a stage: it reads its key columns and appends the brought ones.
#[derive(Debug)]
pub struct LookupDef {
    spec: StageSpec,
    lookup: Arc<Lookup>,
    rejects: Arc<Rejects>,
}

impl LookupDef {
    /// The stage joining `lookup` (built from `spec`), sending rows it cannot place to
    /// `rejects`.
    pub fn new(spec: StageSpec, lookup: Arc<Lookup>, rejects: Arc<Rejects>) -> Self {
        LookupDef {
            spec,
            lookup,
            rejects,
        }
    }

    /// The loaded lookup (for its report).
    pub fn lookup(&self) -> &Arc<Lookup> {
        &self.lookup
    }
}

impl StageDef for LookupDef {
    fn name(&self) -> &str {
        &self.lookup.name
    }

    fn reads(&self) -> Option<Vec<String>> {
        Some(self.lookup.keys.iter().map(|k| k.left.clone()).collect())
    }

    fn build(&self, input: &Schema) -> crate::error::Result<Arc<dyn BatchMap>> {
        let map = LookupMap::try_new(input, Arc::clone(&self.lookup), Arc::clone(&self.rejects))?;
        Ok(Arc::new(map))
    }

    fn spec(&self) -> StageSpec {
        self.spec.clone()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn begin(&self, task: Task) -> crate::error::Result<()> {
        self.rejects.begin(task)
    }
}

/// A lookup joined to batches of one input schema.
#[derive(Debug)]
pub struct LookupMap {
    lookup: Arc<Lookup>,
    rejects: Arc<Rejects>,
    schema: SchemaRef,
    /// Where each row came from (when the scan carries it), for its reject record.
    origin: crate::ledger::origin::Origin,
}

impl LookupMap {
    /// The lookup over rows of `input`; fails when a key column is missing or a brought
    /// column clashes with an input column.
    pub fn try_new(
        input: &Schema,
        lookup: Arc<Lookup>,
        rejects: Arc<Rejects>,
    ) -> crate::error::Result<Self> {
        let fail = |m: String| Error::Config(format!("lookup '{}': {m}", lookup.name));
        for k in &lookup.keys {
            if input.index_of(&k.left).is_err() {
                return Err(fail(format!(
                    "the rows have no column '{}' (columns: {})",
                    k.left,
                    column_list(input)
                )));
            }
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for f in lookup.brought_fields() {
            if input.index_of(f.name()).is_ok() {
                return Err(fail(format!(
                    "the column '{}' is already in the rows: set a prefix or pick columns",
                    f.name()
                )));
            }
            fields.push(f);
        }
        Ok(LookupMap {
            lookup,
            rejects,
            schema: Arc::new(Schema::new(fields)),
            origin: crate::ledger::origin::Origin::of(input),
        })
    }
}

#[async_trait]
impl BatchMap for LookupMap {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn describe(&self) -> String {
        let l = &self.lookup;
        format!(
            "LookupExec: name={}, on={}, how={:?}, on_missing={:?}, broadcast {} rows ({} bytes)",
            l.name,
            l.keys
                .iter()
                .map(|k| if k.left == k.right {
                    k.left.clone()
                } else {
                    format!("{}={}", k.left, k.right)
                })
                .collect::<Vec<_>>()
                .join(","),
            l.how,
            l.on_missing,
            l.stats.rows,
            l.stats.memory_bytes
        )
    }

    async fn map(&self, batch: RecordBatch, task: Task) -> Result<Mapped> {
        let l = &self.lookup;
        let n = batch.num_rows();
        let mut keys = Vec::with_capacity(l.keys.len());
        let mut originals = Vec::with_capacity(l.keys.len());
        let mut unconvertible = vec![false; n];
        for (k, t) in l.keys.iter().zip(&l.key_types) {
            let a = batch
                .column_by_name(&k.left)
                .ok_or_else(|| DataFusionError::Plan(format!("no column '{}'", k.left)))?;
            originals.push(Arc::clone(a));
            if a.data_type() == t {
                keys.push(Arc::clone(a));
                continue;
            }
            let converted = cast(a, t)?;
            for (i, bad) in lossy(a, &converted)?.into_iter().enumerate() {
                unconvertible[i] |= bad;
            }
            keys.push(converted);
        }
        let rows = l.converter.convert_columns(&keys)?;
        let mut found: Vec<Option<u32>> = Vec::with_capacity(n);
        for (i, &bad) in unconvertible.iter().enumerate() {
            let hit = if bad || keys.iter().any(|a| a.is_null(i)) {
                None
            } else {
                l.index.get(rows.row(i).as_ref()).copied()
            };
            found.push(hit);
        }
        let unconvertible_rows = unconvertible.iter().filter(|b| **b).count();
        l.stats
            .unconvertible
            .fetch_add(unconvertible_rows as u64, Ordering::Relaxed);
        let missing = found.iter().filter(|f| f.is_none()).count();
        l.stats
            .matched
            .fetch_add((n - missing) as u64, Ordering::Relaxed);
        l.stats.missing.fetch_add(missing as u64, Ordering::Relaxed);
        let mut keep = vec![true; n];
        let mut rejected = 0;
        if missing > 0 {
            match (l.how, l.on_missing) {
                (How::Inner, _) => {
                    for (k, f) in keep.iter_mut().zip(&found) {
                        *k = f.is_some();
                    }
                }
                (How::Left, OnMissing::Null) => {}
                (How::Left, OnMissing::Fail) => {
                    let i = found.iter().position(Option::is_none).unwrap_or(0);
                    return Err(DataFusionError::External(Box::new(Error::BadRow(format!(
                        "lookup '{}': no match for {}",
                        l.name,
                        describe_key(&l.keys, &originals, i, |k| &k.left)
                    )))));
                }
                (How::Left, OnMissing::Reject) => {
                    for i in (0..n).filter(|&i| found[i].is_none()) {
                        keep[i] = false;
                        rejected += 1;
                        let (raw, raw_truncated) = self.origin.row_json(&batch, i);
                        let mut record = RejectRecord {
                            kind: "lookup_missing",
                            message: format!(
                                "no match for {} in lookup '{}'{}",
                                describe_key(&l.keys, &originals, i, |k| &k.left),
                                l.name,
                                if unconvertible[i] {
                                    " (the key has no value of the lookup key's type)"
                                } else {
                                    ""
                                }
                            ),
                            raw,
                            raw_truncated,
                            stage: Some(l.name.clone()),
                            ..RejectRecord::default()
                        };
                        self.origin.fill(&batch, i, &mut record);
                        self.rejects
                            .reject_later(record, task)
                            .map_err(DataFusionError::from)?;
                    }
                }
            }
        }
        let indices = UInt32Array::from(found);
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for c in l.brought.columns() {
            columns.push(take(c.as_ref(), &indices, None)?);
        }
        let out = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        let batch = if keep.iter().all(|k| *k) {
            out
        } else {
            filter_record_batch(&out, &BooleanArray::from(keep))?
        };
        Ok(Mapped { batch, rejected })
    }
}
