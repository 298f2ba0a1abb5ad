//! The enrich stage as a [`BatchMap`]: each batch's distinct requests are started (or
//! joined, when another partition or batch already started them) and the batch waits for its
//! answers while the next batches' requests are already in flight (eight batches ahead per
//! partition). Memory stays bounded by those batches plus one small answer per distinct key.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringArray, StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::{cast, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{HashMap, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use futures::StreamExt;

use super::call::{is_bare_json, Enricher, Outcome};
use super::spec::OnCallError;
use super::template::Value;
use crate::ledger::rejects::Task;
use crate::ledger::rejects::{RejectRecord, Rejects};
use crate::stage::{BatchMap, Mapped, StageDef};
use crate::stage_spec::StageSpec;

/// Input batches whose calls run ahead of the one being emitted, per partition. Enough that
/// the keys first seen near the end of an input are queued while the earlier keys' calls
/// still run: with 4, the bench's last keys (2-3 of 10,000 are first seen in the last two
/// batches) were queued after the queue had drained and added a round trip of their own
/// (calls 3.245-3.276 s vs 3.210-3.226 s with 8; the raw client 3.20-3.22 s).
const BATCHES_AHEAD: usize = 8;

/// New keys a batch queues before it lets their calls start (on 2 cores, a batch of 8,192
/// new keys would otherwise hold its thread for milliseconds before the first request).
const KEYS_BETWEEN_YIELDS: usize = 128;

/// An enrich stage: it reads the columns its templates name and appends the extracted ones.
#[derive(Debug)]
pub struct EnrichDef {
    spec: StageSpec,
    enricher: Arc<Enricher>,
    rejects: Arc<Rejects>,
}

impl EnrichDef {
    /// The stage calling through `enricher` (built from `spec`), sending rows whose calls
    /// fail to `rejects`.
    pub fn new(spec: StageSpec, enricher: Arc<Enricher>, rejects: Arc<Rejects>) -> Self {
        EnrichDef {
            spec,
            enricher,
            rejects,
        }
    }

    /// The caller (for its report and to stop its calls).
    pub fn enricher(&self) -> &Arc<Enricher> {
        &self.enricher
    }
}

impl StageDef for EnrichDef {
    fn name(&self) -> &str {
        &self.enricher.name
    }

    fn reads(&self) -> Option<Vec<String>> {
        Some(self.enricher.columns.clone())
    }

    fn build(&self, input: &Schema) -> crate::error::Result<Arc<dyn BatchMap>> {
        let map = EnrichMap::try_new(input, Arc::clone(&self.enricher), Arc::clone(&self.rejects))?;
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

/// An enrich stage over batches of a given input schema.
#[derive(Debug)]
pub struct EnrichMap {
    enricher: Arc<Enricher>,
    rejects: Arc<Rejects>,
    schema: SchemaRef,
    /// Where each row came from (when the scan carries it), for its reject record.
    origin: crate::ledger::origin::Origin,
}

impl EnrichMap {
    /// The stage over rows of `input`. Fails when a template names a column the input does
    /// not have or a new column clashes with an existing one.
    pub fn try_new(
        input: &Schema,
        enricher: Arc<Enricher>,
        rejects: Arc<Rejects>,
    ) -> crate::error::Result<Self> {
        let stage =
            |m: String| crate::error::Error::Config(format!("enrich '{}': {m}", enricher.name));
        for c in &enricher.columns {
            if input.index_of(c).is_err() {
                return Err(stage(format!(
                    "no column '{c}' (columns: {})",
                    crate::error::column_list(input)
                )));
            }
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut new: Vec<(String, DataType)> = enricher
            .extract
            .iter()
            .map(|(n, s)| (n.clone(), s.kind.data_type()))
            .collect();
        if enricher.on_error == OnCallError::Null {
            new.push((enricher.error_column.clone(), DataType::Utf8));
        }
        for (name, dt) in new {
            if fields.iter().any(|f| *f.name() == name) {
                return Err(stage(format!(
                    "the new column '{name}' is already a column of the input (rename it in [enrich.extract] or error_column)"
                )));
            }
            fields.push(Field::new(name, dt, true));
        }
        Ok(EnrichMap {
            enricher,
            rejects,
            schema: Arc::new(Schema::new(fields)),
            origin: crate::ledger::origin::Origin::of(input),
        })
    }
}

#[async_trait]
impl BatchMap for EnrichMap {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn describe(&self) -> String {
        format!(
            "EnrichExec: name={}, {} {}, concurrency={}, on_error={:?}",
            self.enricher.name,
            self.enricher.method(),
            self.enricher.url_shown(),
            self.enricher.limiter.limit(),
            self.enricher.on_error
        )
    }

    fn ahead(&self) -> usize {
        BATCHES_AHEAD
    }

    async fn map(&self, batch: RecordBatch, task: Task) -> Result<Mapped> {
        self.enrich(batch, task).await
    }
}

impl EnrichMap {
    /// The error that stops the job (`on_error = "fail"`).
    fn failed(&self, message: &str) -> DataFusionError {
        DataFusionError::External(Box::new(crate::error::Error::Api(format!(
            "enrich '{}': {message}",
            self.enricher.name
        ))))
    }

    /// With `on_error = "fail"`: every answer, or the first failure as soon as it is known
    /// (a row that cannot make its request fails before anything is awaited), so the job
    /// stops at once rather than when the batch's last answer is in.
    async fn all_or_first_failure<F>(
        &self,
        kinds: &[RowResult],
        pending: Vec<F>,
    ) -> Result<Vec<Arc<Outcome>>>
    where
        F: std::future::Future<Output = Arc<Outcome>>,
    {
        let fail = |message: &str| {
            self.enricher
                .stats
                .failed_rows
                .fetch_add(1, Ordering::Relaxed);
            self.failed(message)
        };
        if let Some(why) = kinds.iter().find_map(|k| match k {
            RowResult::Invalid(why) => Some(why),
            _ => None,
        }) {
            return Err(fail(why));
        }
        let mut answers: Vec<Option<Arc<Outcome>>> = vec![None; pending.len()];
        let mut running: futures::stream::FuturesUnordered<_> = pending
            .into_iter()
            .enumerate()
            .map(|(i, call)| async move { (i, call.await) })
            .collect();
        while let Some((i, outcome)) = running.next().await {
            if let Outcome::Failed(f) = outcome.as_ref() {
                return Err(fail(&f.message));
            }
            answers[i] = Some(outcome);
        }
        answers
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| DataFusionError::Internal("an enrich call went unanswered".into()))
    }
}

/// Tells a batch's rows apart by `key`: for each row, the index of its distinct key, and
/// for each distinct key, the first row that has it.
fn distinct_rows<K: std::hash::Hash + Eq>(
    n: usize,
    key: impl Fn(usize) -> K,
) -> (Vec<usize>, Vec<usize>) {
    let mut index: HashMap<K, usize> = HashMap::default();
    let mut rows = Vec::with_capacity(n);
    let mut firsts = Vec::new();
    for row in 0..n {
        let next = firsts.len();
        let k = *index.entry(key(row)).or_insert_with(|| {
            firsts.push(row);
            next
        });
        rows.push(k);
    }
    (rows, firsts)
}

/// A new column of type `data_type`: row `i` holds `value(rows[i])` (NULL for `None`).
/// The extracted types are built with their own builders; a value of another type (never
/// made by extraction) takes the general path through scalars.
fn extracted_column<'a>(
    data_type: &DataType,
    rows: &[usize],
    value: impl Fn(usize) -> Option<&'a ScalarValue>,
) -> Result<ArrayRef> {
    // Each row takes its key's value through `$builder` (`$v` bound to the scalar's
    // payload, `$append` what is appended).
    macro_rules! build {
        ($builder:expr, $variant:ident, |$v:ident| $append:expr) => {{
            let mut b = $builder;
            for &k in rows {
                match value(k) {
                    Some(ScalarValue::$variant(Some($v))) => b.append_value($append),
                    Some(ScalarValue::$variant(None)) | None => b.append_null(),
                    Some(_) => return scalar_column(data_type, rows, value),
                }
            }
            Ok(Arc::new(b.finish()) as ArrayRef)
        }};
    }
    let n = rows.len();
    match data_type {
        DataType::Utf8 => build!(StringBuilder::with_capacity(n, n * 16), Utf8, |v| v),
        DataType::Int64 => build!(Int64Builder::with_capacity(n), Int64, |v| *v),
        DataType::Float64 => build!(Float64Builder::with_capacity(n), Float64, |v| *v),
        DataType::Boolean => build!(BooleanBuilder::with_capacity(n), Boolean, |v| *v),
        _ => scalar_column(data_type, rows, value),
    }
}

/// [`extracted_column`] through scalars: one per distinct value, then taken per row.
fn scalar_column<'a>(
    data_type: &DataType,
    rows: &[usize],
    value: impl Fn(usize) -> Option<&'a ScalarValue>,
) -> Result<ArrayRef> {
    let distinct = rows.iter().max().map_or(0, |m| m + 1);
    let scalars = (0..distinct)
        .map(|k| match value(k) {
            Some(v) => Ok(v.clone()),
            None => ScalarValue::try_from(data_type),
        })
        .collect::<Result<Vec<_>>>()?;
    if scalars.is_empty() {
        return Ok(datafusion::arrow::array::new_empty_array(data_type));
    }
    let distinct = ScalarValue::iter_to_array(scalars)?;
    let take_rows = UInt32Array::from(rows.iter().map(|&k| k as u32).collect::<Vec<u32>>());
    Ok(take(distinct.as_ref(), &take_rows, None)?)
}

/// How one row fared.
enum RowResult {
    /// NULL in the URL: no call, NULL columns.
    NoCall,
    /// Index into the batch's distinct outcomes.
    Call(usize),
    /// No request could be made (a value that cannot go into the URL).
    Invalid(String),
}

impl EnrichMap {
    async fn enrich(&self, batch: RecordBatch, task: Task) -> Result<Mapped> {
        let e = &self.enricher;
        let n = batch.num_rows();
        if n == 0 {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)).into());
        }
        e.stats.rows.fetch_add(n as u64, Ordering::Relaxed);
        // The placeholder values of every row, as text (plus whether JSON takes them bare).
        let mut columns: Vec<(StringArray, bool)> = Vec::with_capacity(e.columns.len());
        for name in &e.columns {
            let array = batch.column_by_name(name).ok_or_else(|| {
                DataFusionError::Plan(format!("enrich '{}': no column '{name}'", e.name))
            })?;
            let text = cast(array, &DataType::Utf8)?;
            let text = text
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| DataFusionError::Internal("cast to Utf8".into()))?;
            columns.push((text, is_bare_json(array.data_type())));
        }
        // Each distinct set of values is rendered (and its call started or joined) once;
        // rows are told apart by the values where they lie, without a copy per row.
        fn text(a: &StringArray, row: usize) -> Option<&str> {
            (!a.is_null(row)).then(|| a.value(row))
        }
        let (rows, firsts) = match &columns[..] {
            [(a, _)] => distinct_rows(n, |row| text(a, row)),
            _ => distinct_rows(n, |row| {
                columns
                    .iter()
                    .map(|(a, _)| text(a, row))
                    .collect::<Vec<_>>()
            }),
        };
        let mut kinds: Vec<RowResult> = Vec::with_capacity(firsts.len());
        let mut pending = Vec::new();
        for (i, &row) in firsts.iter().enumerate() {
            if i % KEYS_BETWEEN_YIELDS == KEYS_BETWEEN_YIELDS - 1 {
                // The keys queued so far go out now: their runners get the thread while
                // the rest of the batch is rendered.
                tokio::task::yield_now().await;
            }
            let values: Vec<Value> = columns
                .iter()
                .map(|(a, bare)| text(a, row).map(|v| (v.to_string(), *bare)))
                .collect();
            kinds.push(match e.request(&values) {
                Ok(None) => RowResult::NoCall,
                Err(why) => RowResult::Invalid(why),
                Ok(Some(req)) => {
                    pending.push(e.outcome(req));
                    RowResult::Call(pending.len() - 1)
                }
            });
        }
        let null_keys = rows
            .iter()
            .filter(|&&k| matches!(kinds[k], RowResult::NoCall))
            .count();
        e.stats
            .null_keys
            .fetch_add(null_keys as u64, Ordering::Relaxed);
        let outcomes: Vec<Arc<Outcome>> = if e.on_error == OnCallError::Fail {
            self.all_or_first_failure(&kinds, pending).await?
        } else {
            // The keys queued last are answered last: waiting for the last one first, the
            // others are mostly answered by then and are taken without a wake-up each
            // (awaiting them all at once registers and wakes thousands of waiters a batch).
            if let Some(last) = pending.last() {
                last.clone().await;
            }
            let mut outcomes = Vec::with_capacity(pending.len());
            for answer in pending {
                outcomes.push(answer.await);
            }
            outcomes
        };

        // New columns, written row by row straight from each request's answer (NULL
        // where it failed or made no call).
        let answers: Vec<Option<&[ScalarValue]>> = kinds
            .iter()
            .map(|kind| match kind {
                RowResult::Call(i) => match outcomes[*i].as_ref() {
                    Outcome::Ok(values) => Some(&values[..]),
                    Outcome::Failed(_) => None,
                },
                RowResult::NoCall | RowResult::Invalid(_) => None,
            })
            .collect();
        let mut new_columns: Vec<ArrayRef> = Vec::with_capacity(e.extract.len());
        for (j, (_, spec)) in e.extract.iter().enumerate() {
            new_columns.push(extracted_column(&spec.kind.data_type(), &rows, |k| {
                answers[k].map(|v| &v[j])
            })?);
        }
        // An error column (on_error = null) and which rows stay.
        let mut errors: Vec<Option<String>> = Vec::new();
        let mut keep = Vec::with_capacity(n);
        for (row, result) in rows.iter().map(|&k| &kinds[k]).enumerate() {
            let failure = match result {
                RowResult::NoCall => None,
                RowResult::Call(i) => match outcomes[*i].as_ref() {
                    Outcome::Ok(_) => {
                        keep.push(true);
                        errors.push(None);
                        continue;
                    }
                    Outcome::Failed(f) => {
                        Some((f.message.clone(), f.status, f.attempts, Some(f.url.clone())))
                    }
                },
                RowResult::Invalid(why) => Some((why.clone(), None, 0, None)),
            };
            let Some((message, status, attempts, url)) = failure else {
                keep.push(true);
                errors.push(None);
                continue;
            };
            e.stats.failed_rows.fetch_add(1, Ordering::Relaxed);
            match e.on_error {
                OnCallError::Fail => return Err(self.failed(&message)),
                OnCallError::Null => {
                    keep.push(true);
                    errors.push(Some(message));
                }
                OnCallError::Reject => {
                    keep.push(false);
                    errors.push(None);
                    let (raw, raw_truncated) = self.origin.row_json(&batch, row);
                    let mut record = RejectRecord {
                        column: None,
                        kind: "enrich_failed",
                        message,
                        raw,
                        raw_truncated,
                        stage: Some(e.name.clone()),
                        status,
                        attempts: Some(attempts),
                        url,
                        ..RejectRecord::default()
                    };
                    self.origin.fill(&batch, row, &mut record);
                    self.rejects
                        .reject_later(record, task)
                        .map_err(DataFusionError::from)?;
                }
            }
        }
        let mut out: Vec<ArrayRef> = batch.columns().to_vec();
        out.extend(new_columns);
        if e.on_error == OnCallError::Null {
            out.push(Arc::new(StringArray::from(errors)));
        }
        let full = RecordBatch::try_new(Arc::clone(&self.schema), out)?;
        // Only rejected rows are left out.
        let rejected = keep.iter().filter(|k| !**k).count();
        let batch = if rejected == 0 {
            full
        } else {
            filter_record_batch(&full, &BooleanArray::from(keep))?
        };
        Ok(Mapped { batch, rejected })
    }
}
