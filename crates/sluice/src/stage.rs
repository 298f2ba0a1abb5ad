//! Stages that turn each batch of the previous stage into a batch with more (or other)
//! columns: enrich calls, broadcast lookups and user batch functions.
//!
//! A stage is a [`BatchMap`]. [`MapTable`] makes it a table for SQL (its input is the
//! previous stage's logical plan) and [`MapExec`] is its node in the physical plan: every
//! input partition is mapped on its own, so the work spreads over all cores, with up to
//! `ahead` batches in progress per partition (more than one for stages that wait on I/O).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
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

/// A stage as a table: what later SQL steps read.
#[derive(Debug)]
pub struct MapTable {
    input: LogicalPlan,
    map: Arc<dyn BatchMap>,
}

impl MapTable {
    /// The stage `map` over `input` (the previous stage's plan).
    pub fn new(input: LogicalPlan, map: Arc<dyn BatchMap>) -> Self {
        MapTable { input, map }
    }
}

#[async_trait]
impl TableProvider for MapTable {
    fn schema(&self) -> SchemaRef {
        self.map.schema()
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
        Ok(Arc::new(MapExec::try_new(
            input,
            Arc::clone(&self.map),
            projection.cloned(),
        )?))
    }
}

/// Runs a [`BatchMap`] on every batch of every partition of its input.
#[derive(Debug)]
pub struct MapExec {
    input: Arc<dyn ExecutionPlan>,
    map: Arc<dyn BatchMap>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl MapExec {
    /// The node; `projection` picks output columns of the stage's schema.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        map: Arc<dyn BatchMap>,
        projection: Option<Vec<usize>>,
    ) -> Result<Self> {
        let full = map.schema();
        let schema = match &projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full,
        };
        let cache = crate::plan::streaming(
            Arc::clone(&schema),
            input.properties().output_partitioning().clone(),
        );
        Ok(MapExec {
            input,
            map,
            projection,
            schema,
            cache,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The stage this node runs.
    pub fn map(&self) -> &Arc<dyn BatchMap> {
        &self.map
    }
}

impl DisplayAs for MapExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.map.describe())
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
        Ok(Arc::new(MapExec::try_new(
            input,
            Arc::clone(&self.map),
            self.projection.clone(),
        )?))
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
        let rejected = MetricBuilder::new(&self.metrics).counter(REJECTED_METRIC, partition);
        let map = Arc::clone(&self.map);
        let projection = self.projection.clone();
        let stream = input
            .map(move |batch| {
                let map = Arc::clone(&map);
                let projection = projection.clone();
                async move {
                    let out = map.map(batch?).await?;
                    let batch = match &projection {
                        Some(p) => out.batch.project(p)?,
                        None => out.batch,
                    };
                    Ok((batch, out.rejected))
                }
            })
            .buffered(self.map.ahead().max(1))
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
