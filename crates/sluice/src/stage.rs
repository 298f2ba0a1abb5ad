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

use crate::ledger::rejects::Task;
use crate::services::Services;
use crate::stage_spec::StageSpec;
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
    /// how many of its rows went to the rejects dataset (as rows of `task`).
    async fn map(&self, batch: RecordBatch, task: Task) -> Result<Mapped>;
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
pub use crate::ledger::REJECTED_METRIC;

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

    /// The stage as configuration: what a plan holds to build it again elsewhere.
    fn spec(&self) -> StageSpec;

    /// For reports that need the concrete stage (a lookup's size, an enrich stage's calls).
    fn as_any(&self) -> &dyn std::any::Any;

    /// Task `task` of a node running the stage starts (again): a stage that rejects rows
    /// drops what an earlier run of the task rejected.
    fn begin(&self, task: Task) -> crate::error::Result<()> {
        let _ = task;
        Ok(())
    }
}

/// A stage in the logical plan. A stage that only appends columns ([`StageDef::reads`] is
/// a list) lets the optimizer prune input columns nobody above it uses and push filters on
/// input columns below it, so the scan decodes (and rejects rows for) only what the job
/// reads. [`StagePlanner`] turns it into a [`MapExec`].
///
/// The node is its stage's id and `def`, the stage built from its [`StageSpec`] in this
/// session (also kept among the session's [`Services`] under the id), which the node asks
/// for the columns the stage reads and makes, and for its spec.
#[derive(Debug, Clone)]
pub struct StageNode {
    input: LogicalPlan,
    /// The stage's id among the session's [`Services`].
    id: u64,
    def: Arc<dyn StageDef>,
    schema: DFSchemaRef,
}

impl StageNode {
    /// Stage `def` (built from its spec and kept under `id` among the session's services)
    /// over `input`; fails as the stage would on that input (a missing key column, a
    /// clashing new column...). The planner keeps `def` in the planning session's services.
    pub fn try_new(
        input: LogicalPlan,
        id: u64,
        def: Arc<dyn StageDef>,
    ) -> crate::error::Result<Self> {
        let schema = output_schema(&input, def.as_ref())?;
        Ok(StageNode {
            input,
            id,
            def,
            schema,
        })
    }

    /// The stage's id among the session's services.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The stage as configuration.
    pub fn spec(&self) -> StageSpec {
        self.def.spec()
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
        // Rows' origins (when the scan carries them) reach every stage that may reject rows.
        needed.extend((0..n).filter(|&i| crate::ledger::origin::is_origin(input.field(i).name())));
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
            stage.spec(),
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
/// id, [`StageSpec`], line in plans and output schema only: the stage itself (a loaded
/// lookup, an HTTP client, a function) is found among the session's [`Services`] when the
/// node runs — built there from the spec, once, when the session has not built it yet (a
/// plan run in another process) — and its [`BatchMap`] built for this node's input.
#[derive(Debug)]
pub struct MapExec {
    input: Arc<dyn ExecutionPlan>,
    /// The node's own id (its tasks' rejected rows are written and counted under it).
    node: u64,
    stage: u64,
    spec: StageSpec,
    /// Input columns whose values must each be in one partition only (from the spec:
    /// [`StageSpec::partition_keys`]).
    partition_keys: Option<Vec<String>>,
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
        spec: StageSpec,
        describe: String,
        schema: SchemaRef,
    ) -> Self {
        let cache = crate::plan::streaming(
            Arc::clone(&schema),
            input.properties().output_partitioning().clone(),
        );
        MapExec {
            input,
            node: crate::services::next_id(),
            stage,
            partition_keys: spec.partition_keys().ok().flatten(),
            spec,
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

    /// The stage as configuration.
    pub fn spec(&self) -> &StageSpec {
        &self.spec
    }

    /// Its line in plans.
    pub fn describe(&self) -> &str {
        &self.describe
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

    fn required_input_distribution(&self) -> Vec<datafusion::physical_expr::Distribution> {
        use datafusion::physical_expr::Distribution;
        // An enrich stage keyed across partitions: each key in one partition only.
        let keys = self.partition_keys.as_ref().and_then(|cols| {
            let schema = self.input.schema();
            cols.iter()
                .map(|c| datafusion::physical_expr::expressions::col(c, &schema).ok())
                .collect::<Option<Vec<_>>>()
        });
        match keys {
            Some(keys) if !keys.is_empty() => vec![Distribution::KeyPartitioned(keys)],
            _ => vec![Distribution::UnspecifiedDistribution],
        }
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
            self.spec.clone(),
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
        let services = Services::of_task(&context)?;
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let in_schema = self.input.schema();
        let out_schema = Arc::clone(&self.schema);
        let (id, spec, describe) = (self.stage, self.spec.clone(), self.describe.clone());
        let partitions = self
            .input
            .properties()
            .output_partitioning()
            .partition_count();
        let task = Task {
            node: self.node,
            partition,
        };
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let rejected = MetricBuilder::new(&self.metrics).counter(REJECTED_METRIC, partition);
        // The stage as this session has it, or built here from its spec (once per session).
        let map = async move {
            let def = services
                .stage_or_build(id, async {
                    // A task of a cluster's stage may run several of its partitions: its
                    // limits are those partitions' shares.
                    spec.for_partitions(partitions)?
                        .build_for_task(&context)
                        .await
                })
                .await?;
            let map = def.build(in_schema.as_ref())?;
            // A partition run again starts its rejected rows and counts afresh.
            def.begin(task)?;
            if map.schema().fields() != out_schema.fields() {
                return internal_err!("stage {describe} was planned for other columns");
            }
            Ok(map)
        };
        let stream = futures::stream::once(async move {
            match map.await {
                Ok(map) => run_stage(map, input, task, metrics, rejected),
                Err(e) => {
                    let failed: SendableRecordBatchStream =
                        Box::pin(RecordBatchStreamAdapter::new(
                            input.schema(),
                            futures::stream::once(async move { Err(e) }),
                        ));
                    failed
                }
            }
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// The batches of `input` through `map`, `ahead` of them at once, counted into `metrics`.
fn run_stage(
    map: Arc<dyn BatchMap>,
    input: SendableRecordBatchStream,
    task: Task,
    metrics: BaselineMetrics,
    rejected: datafusion::physical_plan::metrics::Count,
) -> SendableRecordBatchStream {
    let schema = map.schema();
    let ahead = map.ahead().max(1);
    let stream = input
        .map(move |batch| {
            let map = Arc::clone(&map);
            async move {
                let out = map.map(batch?, task).await?;
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
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}
