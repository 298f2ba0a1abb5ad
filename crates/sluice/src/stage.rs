//! Stages that turn each batch of the previous stage into a batch with more (or other)
//! columns: enrich calls, broadcast lookups and user batch functions.
//!
//! A stage is a [`StageDef`]: in the logical plan a [`StageNode`] (an extension node the
//! optimizer sees through), which [`StagePlanner`] plans as a [`MapExec`] running the
//! stage's [`BatchMap`] built for the columns that reach it. In the physical plan every
//! input partition is mapped on its own, so the work spreads over all cores, with up to
//! `ahead` batches in progress per partition (more than one for stages that wait on I/O).

use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, DFSchema, DFSchemaRef, TableReference};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use crate::services::Services;
use futures::StreamExt;

/// The work of one stage on one batch.
#[async_trait]
pub trait BatchMap: Send + Sync + fmt::Debug {
    /// The output schema (for every batch).
    fn schema(&self) -> SchemaRef;

    /// One line for plans: `Lookup: cats on category (120 rows, 8 KiB)`.
    fn describe(&self) -> String;

    /// Batches in progress at once per partition (1 for CPU work; more to overlap I/O).
    fn ahead(&self) -> usize {
        1
    }

    /// Maps one batch (of the input's schema) to one batch of [`BatchMap::schema`], saying
    /// how many of its rows went to the rejects dataset.
    async fn map(&self, batch: RecordBatch) -> Result<Mapped>;
}

/// What a stage made of one batch.
#[derive(Debug)]
pub struct Mapped {
    /// The output rows.
    pub batch: RecordBatch,
    /// Input rows the stage sent to the rejects dataset (not in `batch`).
    pub rejected: usize,
}

impl From<RecordBatch> for Mapped {
    fn from(batch: RecordBatch) -> Self {
        Mapped { batch, rejected: 0 }
    }
}

/// The metric of a [`MapExec`] counting the rows its stage rejected (for the row ledger).
pub const REJECTED_METRIC: &str = "rows_rejected";

/// What a stage is before the optimizer has decided which input columns reach it: it
/// names the columns it reads itself and builds its [`BatchMap`] for whatever input it gets.
pub trait StageDef: Send + Sync + fmt::Debug {
    /// The stage's name (a table for later SQL steps).
    fn name(&self) -> &str;

    /// The input columns the stage reads itself; `None` when it may read any (a function
    /// whose output depends on its whole input: nothing is pruned below it). A stage that
    /// reads a list keeps its input's columns and appends its own after them.
    fn reads(&self) -> Option<Vec<String>>;

    /// The stage over batches of `input`.
    fn build(&self, input: &Schema) -> crate::error::Result<Arc<dyn BatchMap>>;
}

/// A stage in the logical plan. A stage that only appends columns ([`StageDef::reads`] is
/// a list) lets the optimizer prune input columns nobody above it uses and push filters on
/// input columns below it, so the scan decodes (and rejects rows for) only what the job
/// reads. [`StagePlanner`] turns it into a [`MapExec`].
#[derive(Debug, Clone)]
pub struct StageNode {
    input: LogicalPlan,
    /// The stage's id among the session's [`Services`] once planned.
    id: u64,
    def: Arc<dyn StageDef>,
    schema: DFSchemaRef,
}

impl StageNode {
    /// The stage `def` over `input`; fails as the stage would on that input (a missing key
    /// column, a clashing new column...).
    pub fn try_new(input: LogicalPlan, def: Arc<dyn StageDef>) -> crate::error::Result<Self> {
        let schema = output_schema(&input, def.as_ref())?;
        Ok(StageNode {
            input,
            id: crate::services::next_id(),
            def,
            schema,
        })
    }

    /// The node as a logical plan.
    pub fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }

    /// The stage.
    pub fn def(&self) -> &Arc<dyn StageDef> {
        &self.def
    }
}

/// The stage's output over `input`: the input's fields (qualifiers kept) followed by the
/// appended ones, or for an opaque stage whatever it makes.
fn output_schema(input: &LogicalPlan, def: &dyn StageDef) -> crate::error::Result<DFSchemaRef> {
    let in_schema = input.schema();
    let built = def.build(in_schema.as_arrow())?.schema();
    if def.reads().is_none() {
        return Ok(Arc::new(DFSchema::try_from(built.as_ref().clone())?));
    }
    let n = in_schema.fields().len();
    let keeps_input = built.fields().len() >= n
        && built
            .fields()
            .iter()
            .zip(in_schema.fields())
            .all(|(a, b)| a.name() == b.name());
    if !keeps_input {
        return Err(crate::error::Error::Config(format!(
            "stage '{}' does not keep its input's columns first",
            def.name()
        )));
    }
    let mut fields: Vec<(Option<TableReference>, FieldRef)> = in_schema
        .iter()
        .map(|(q, f)| (q.cloned(), Arc::clone(f)))
        .collect();
    fields.extend(built.fields().iter().skip(n).map(|f| (None, Arc::clone(f))));
    Ok(Arc::new(DFSchema::new_with_metadata(
        fields,
        in_schema.metadata().clone(),
    )?))
}

impl PartialEq for StageNode {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.input == other.input
    }
}

impl Eq for StageNode {}

impl PartialOrd for StageNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match self.def.name().partial_cmp(other.def.name()) {
            Some(std::cmp::Ordering::Equal) if self != other => {
                self.input.partial_cmp(&other.input)
            }
            o => o,
        }
    }
}

impl Hash for StageNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.input.hash(state);
    }
}

impl UserDefinedLogicalNodeCore for StageNode {
    fn name(&self) -> &str {
        "Stage"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        // Filters on the input's columns commute with a stage that decides row by row; the
        // columns it makes (all of them, for an opaque stage) stay above it.
        let n = match self.def.reads() {
            Some(_) => self.input.schema().fields().len(),
            None => 0,
        };
        self.schema
            .fields()
            .iter()
            .skip(n)
            .map(|f| f.name().clone())
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Stage: {}", self.def.name())
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        if !exprs.is_empty() {
            return internal_err!("a stage node has no expressions");
        }
        let [input] = <[_; 1]>::try_from(inputs)
            .map_err(|_| DataFusionError::Internal("a stage node has one input".into()))?;
        // Optimizer passes call this many times; the stage is built again (a batch function
        // called on an empty batch) only when its input's columns changed.
        let schema = if input.schema() == self.input.schema() {
            Arc::clone(&self.schema)
        } else {
            output_schema(&input, self.def.as_ref())
                .map_err(|e| DataFusionError::Plan(format!("stage '{}': {e}", self.def.name())))?
        };
        Ok(StageNode {
            input,
            id: self.id,
            def: Arc::clone(&self.def),
            schema,
        })
    }

    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let reads = self.def.reads()?;
        let input = self.input.schema();
        let n = input.fields().len();
        let mut needed: Vec<usize> = output_columns.iter().copied().filter(|i| *i < n).collect();
        for c in &reads {
            // A name the input lacks would have failed `try_new`; keep everything if it did.
            needed.push(input.as_arrow().index_of(c).ok()?);
        }
        needed.sort_unstable();
        needed.dedup();
        Some(vec![needed])
    }
}

/// Plans [`StageNode`]s as [`MapExec`]s, building each stage for the columns its physical
/// input has.
#[derive(Debug, Default)]
pub struct StagePlanner;

#[async_trait]
impl ExtensionPlanner for StagePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(stage) = node.as_any().downcast_ref::<StageNode>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return internal_err!("a stage node has one input");
        };
        let map = stage.def.build(input.schema().as_ref())?;
        Services::of(session.config())?.keep_stage(stage.id, &stage.def);
        Ok(Some(Arc::new(MapExec::new(
            Arc::clone(input),
            stage.id,
            map.describe(),
            map.schema(),
        ))))
    }
}

/// The session's query planner: DataFusion's, plus sluice's stages.
#[derive(Debug, Default)]
pub struct SluiceQueryPlanner;

#[async_trait]
impl QueryPlanner for SluiceQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(StagePlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// Runs a stage on every batch of every partition of its input. The node holds the stage's
/// id, name and output schema only: the stage itself (a loaded lookup, an HTTP client, a
/// function) is found among the session's [`Services`] when the node runs, and its
/// [`BatchMap`] built there for this node's input.
#[derive(Debug)]
pub struct MapExec {
    input: Arc<dyn ExecutionPlan>,
    stage: u64,
    describe: String,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl MapExec {
    /// The node running stage `stage` (an id among the session's services) over `input`;
    /// `schema` is its output and `describe` its line in plans.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        stage: u64,
        describe: String,
        schema: SchemaRef,
    ) -> Self {
        let cache = crate::plan::streaming(
            Arc::clone(&schema),
            input.properties().output_partitioning().clone(),
        );
        MapExec {
            input,
            stage,
            describe,
            schema,
            cache,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The id of the stage this node runs.
    pub fn stage(&self) -> u64 {
        self.stage
    }
}

impl DisplayAs for MapExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.describe)
    }
}

impl ExecutionPlan for MapExec {
    fn name(&self) -> &str {
        "MapExec"
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
        let input = crate::plan::only_child("MapExec", children)?;
        Ok(Arc::new(MapExec::new(
            input,
            self.stage,
            self.describe.clone(),
            Arc::clone(&self.schema),
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
        let map = Services::of_task(&context)?
            .stage(self.stage)?
            .build(self.input.schema().as_ref())?;
        if map.schema().fields() != self.schema.fields() {
            return internal_err!("stage {} was planned for other columns", self.describe);
        }
        let ahead = map.ahead().max(1);
        let input = self.input.execute(partition, context)?;
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let rejected = MetricBuilder::new(&self.metrics).counter(REJECTED_METRIC, partition);
        let stream = input
            .map(move |batch| {
                let map = Arc::clone(&map);
                async move {
                    let out = map.map(batch?).await?;
                    Ok((out.batch, out.rejected))
                }
            })
            .buffered(ahead)
            .map(move |r: Result<(RecordBatch, usize)>| {
                r.map(|(b, n)| {
                    rejected.add(n);
                    metrics.record_output(b.num_rows());
                    b
                })
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}
