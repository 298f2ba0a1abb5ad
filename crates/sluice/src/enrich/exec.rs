//! The enrich stage as a [`BatchMap`]: each batch's distinct requests are started (or
//! joined, when another partition or batch already started them) and the batch waits for its
//! answers while the next batches' requests are already in flight (four batches ahead per
//! partition). Memory stays bounded by those batches plus one small answer per distinct key.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use futures::StreamExt;

use super::call::{is_bare_json, Enricher, Outcome};
use super::spec::OnCallError;
use super::template::Value;
use crate::ledger::rejects::Task;
use crate::ledger::rejects::{RejectRecord, Rejects};
use crate::stage::{BatchMap, Mapped, StageDef};
use crate::stage_spec::StageSpec;

/// Input batches whose calls run ahead of the one being emitted, per partition.
const BATCHES_AHEAD: usize = 4;

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
        // Each distinct set of values is rendered (and its call started or joined) once.
        let mut by_values: HashMap<Vec<Value>, usize> = HashMap::new();
        let mut kinds: Vec<RowResult> = Vec::new();
        let mut pending = Vec::new();
        let mut rows: Vec<usize> = Vec::with_capacity(n);
        for row in 0..n {
            let values: Vec<Value> = columns
                .iter()
                .map(|(a, bare)| (!a.is_null(row)).then(|| (a.value(row).to_string(), *bare)))
                .collect();
            let k = match by_values.get(&values) {
                Some(&k) => k,
                None => {
                    kinds.push(match e.request(&values) {
                        Ok(None) => RowResult::NoCall,
                        Err(why) => RowResult::Invalid(why),
                        Ok(Some(req)) => {
                            pending.push(e.outcome(req));
                            RowResult::Call(pending.len() - 1)
                        }
                    });
                    by_values.insert(values, kinds.len() - 1);
                    kinds.len() - 1
                }
            };
            if matches!(kinds[k], RowResult::NoCall) {
                e.stats.null_keys.fetch_add(1, Ordering::Relaxed);
            }
            rows.push(k);
        }
        let outcomes: Vec<Arc<Outcome>> = if e.on_error == OnCallError::Fail {
            self.all_or_first_failure(&kinds, pending).await?
        } else {
            futures::future::join_all(pending).await
        };

        // New columns: one value per distinct request (NULL where it failed or made no
        // call), then every row takes its request's value: no per-row scalars.
        let mut per_request: Vec<Vec<ScalarValue>> =
            vec![Vec::with_capacity(kinds.len()); e.extract.len()];
        for kind in &kinds {
            let values = match kind {
                RowResult::Call(i) => match outcomes[*i].as_ref() {
                    Outcome::Ok(values) => Some(values),
                    Outcome::Failed(_) => None,
                },
                RowResult::NoCall | RowResult::Invalid(_) => None,
            };
            for (j, (_, spec)) in e.extract.iter().enumerate() {
                per_request[j].push(match values {
                    Some(v) => v[j].clone(),
                    None => ScalarValue::try_from(&spec.kind.data_type())?,
                });
            }
        }
        let take_rows = UInt32Array::from(rows.iter().map(|&k| k as u32).collect::<Vec<u32>>());
        let mut new_columns: Vec<ArrayRef> = Vec::with_capacity(e.extract.len());
        for values in per_request {
            let distinct = ScalarValue::iter_to_array(values)?;
            new_columns.push(take(distinct.as_ref(), &take_rows, None)?);
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
