//! The enrich stage in the plan: `EnrichTable` (what SQL sees) and `EnrichExec` (the node
//! that streams batches through the API calls).
//!
//! Each partition streams its input batches; the distinct requests of a batch are started
//! (or joined, when another partition or batch already started them) and the batch waits for
//! its answers while the next batches' requests are already in flight (four batches ahead per
//! partition). Memory stays bounded by those batches plus one small answer per distinct key.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::ScalarValue;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

use super::call::{is_bare_json, Enricher, Outcome};
use super::spec::OnCallError;
use super::template::Value;
use crate::source::file_scan::row_json;
use crate::source::rejects::{RejectRecord, Rejects};

/// Input batches whose calls run ahead of the one being emitted, per partition.
const BATCHES_AHEAD: usize = 4;

/// The output of an enrich stage as a table: its input's columns plus the extracted ones.
#[derive(Debug)]
pub struct EnrichTable {
    input: LogicalPlan,
    enricher: Arc<Enricher>,
    rejects: Arc<Rejects>,
    schema: SchemaRef,
}

impl EnrichTable {
    /// Wraps `input` (the previous stage). Fails when a template names a column the input
    /// does not have or a new column clashes with an existing one.
    pub fn try_new(
        input: LogicalPlan,
        enricher: Arc<Enricher>,
        rejects: Arc<Rejects>,
    ) -> crate::error::Result<Self> {
        let input_schema = input.schema().as_arrow().clone();
        let stage =
            |m: String| crate::error::Error::Config(format!("enrich '{}': {m}", enricher.name));
        let names = || {
            input_schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for c in &enricher.columns {
            if input_schema.index_of(c).is_err() {
                return Err(stage(format!("no column '{c}' (columns: {})", names())));
            }
        }
        let mut fields: Vec<Field> = input_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
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
        Ok(EnrichTable {
            input,
            enricher,
            rejects,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

#[async_trait]
impl TableProvider for EnrichTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = state.create_physical_plan(&self.input).await?;
        Ok(Arc::new(EnrichExec::new(
            input,
            Arc::clone(&self.enricher),
            Arc::clone(&self.rejects),
            Arc::clone(&self.schema),
            projection.cloned(),
        )))
    }
}

/// Calls the API for each row's distinct request and adds the extracted columns.
#[derive(Debug)]
pub struct EnrichExec {
    input: Arc<dyn ExecutionPlan>,
    enricher: Arc<Enricher>,
    rejects: Arc<Rejects>,
    full_schema: SchemaRef,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl EnrichExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        enricher: Arc<Enricher>,
        rejects: Arc<Rejects>,
        full_schema: SchemaRef,
        projection: Option<Vec<usize>>,
    ) -> Self {
        let schema = match &projection {
            Some(p) => Arc::new(
                full_schema
                    .project(p)
                    .unwrap_or_else(|_| full_schema.as_ref().clone()),
            ),
            None => Arc::clone(&full_schema),
        };
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.properties().output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        EnrichExec {
            input,
            enricher,
            rejects,
            full_schema,
            projection,
            schema,
            cache,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The stage's caller (its counters feed the report).
    pub fn enricher(&self) -> &Arc<Enricher> {
        &self.enricher
    }
}

impl DisplayAs for EnrichExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "EnrichExec: name={}, {} {}, concurrency={}, on_error={:?}",
            self.enricher.name,
            self.enricher.method(),
            self.enricher.url_shown(),
            self.enricher.limiter.limit(),
            self.enricher.on_error
        )
    }
}

impl ExecutionPlan for EnrichExec {
    fn name(&self) -> &str {
        "EnrichExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("EnrichExec has one child".into()))?;
        Ok(Arc::new(EnrichExec::new(
            input,
            Arc::clone(&self.enricher),
            Arc::clone(&self.rejects),
            Arc::clone(&self.full_schema),
            self.projection.clone(),
        )))
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let stage = Arc::new(Stage {
            enricher: Arc::clone(&self.enricher),
            rejects: Arc::clone(&self.rejects),
            full_schema: Arc::clone(&self.full_schema),
            projection: self.projection.clone(),
        });
        let stream = input
            .map(move |batch| {
                let stage = Arc::clone(&stage);
                async move { stage.enrich(batch?).await }
            })
            .buffered(BATCHES_AHEAD)
            .inspect(move |b| {
                if let Ok(b) = b {
                    metrics.record_output(b.num_rows());
                }
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// What one partition needs to enrich a batch.
struct Stage {
    enricher: Arc<Enricher>,
    rejects: Arc<Rejects>,
    full_schema: SchemaRef,
    projection: Option<Vec<usize>>,
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

impl Stage {
    async fn enrich(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let e = &self.enricher;
        let n = batch.num_rows();
        if n == 0 {
            let schema = match &self.projection {
                Some(p) => Arc::new(self.full_schema.project(p)?),
                None => Arc::clone(&self.full_schema),
            };
            return Ok(RecordBatch::new_empty(schema));
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
        let mut distinct: HashMap<String, usize> = HashMap::new();
        let mut pending = Vec::new();
        let mut rows = Vec::with_capacity(n);
        for row in 0..n {
            let values: Vec<Value> = columns
                .iter()
                .map(|(a, bare)| (!a.is_null(row)).then(|| (a.value(row).to_string(), *bare)))
                .collect();
            rows.push(match e.request(&values) {
                Ok(None) => {
                    e.stats.null_keys.fetch_add(1, Ordering::Relaxed);
                    RowResult::NoCall
                }
                Err(why) => RowResult::Invalid(why),
                Ok(Some(req)) => {
                    let key = format!("{}\n{}", req.shown, req.body_shown.as_deref().unwrap_or(""));
                    let next = pending.len();
                    let i = *distinct.entry(key).or_insert(next);
                    if i == next {
                        pending.push(e.outcome(req));
                    }
                    RowResult::Call(i)
                }
            });
        }
        let outcomes: Vec<Arc<Outcome>> = futures::future::join_all(pending).await;

        // New columns, an error column (on_error = null) and which rows stay.
        let mut new_values: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(n); e.extract.len()];
        let mut errors: Vec<Option<String>> = Vec::new();
        let mut keep = Vec::with_capacity(n);
        let null_row = |new_values: &mut Vec<Vec<ScalarValue>>| -> Result<()> {
            for (j, (_, spec)) in e.extract.iter().enumerate() {
                new_values[j].push(ScalarValue::try_from(&spec.kind.data_type())?);
            }
            Ok(())
        };
        for (row, result) in rows.iter().enumerate() {
            let failure = match result {
                RowResult::NoCall => None,
                RowResult::Call(i) => match outcomes[*i].as_ref() {
                    Outcome::Ok(values) => {
                        for (j, v) in values.iter().enumerate() {
                            new_values[j].push(v.clone());
                        }
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
                null_row(&mut new_values)?;
                keep.push(true);
                errors.push(None);
                continue;
            };
            e.stats.failed_rows.fetch_add(1, Ordering::Relaxed);
            match e.on_error {
                OnCallError::Fail => {
                    return Err(DataFusionError::External(Box::new(
                        crate::error::Error::BadRow(format!("enrich '{}': {message}", e.name)),
                    )))
                }
                OnCallError::Null => {
                    null_row(&mut new_values)?;
                    keep.push(true);
                    errors.push(Some(message));
                }
                OnCallError::Reject => {
                    null_row(&mut new_values)?;
                    keep.push(false);
                    errors.push(None);
                    let (raw, raw_truncated) = row_json(&batch.slice(row, 1));
                    self.rejects
                        .reject_later(RejectRecord {
                            file: String::new(),
                            line: 0,
                            byte_offset: 0,
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
                        })
                        .map_err(DataFusionError::from)?;
                }
            }
        }
        let mut out: Vec<ArrayRef> = batch.columns().to_vec();
        for values in new_values {
            out.push(ScalarValue::iter_to_array(values)?);
        }
        if e.on_error == OnCallError::Null {
            out.push(Arc::new(StringArray::from(errors)));
        }
        let full = RecordBatch::try_new(Arc::clone(&self.full_schema), out)?;
        let full = if keep.iter().all(|k| *k) {
            full
        } else {
            filter_record_batch(&full, &BooleanArray::from(keep))?
        };
        Ok(match &self.projection {
            Some(p) => full.project(p)?,
            None => full,
        })
    }
}
