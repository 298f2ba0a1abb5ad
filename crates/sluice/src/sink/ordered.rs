//! `OrderedConcatExec`: one output partition holding its input's partitions one after the
//! other, in order — for single-file outputs, so that a file converted to one file keeps its
//! row order (as DuckDB and Polars do), while every partition still decodes in parallel.
//!
//! Each input partition runs in its own task into a bounded channel; the output drains
//! partition 0, then 1, and so on. A partition that is not being drained yet stops after
//! [`AHEAD`] batches (backpressure), so memory stays bounded by `partitions x AHEAD` batches.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::Distribution;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;

/// Batches each not-yet-drained partition may decode ahead.
const AHEAD: usize = 16;

/// Concatenates the input's partitions, in partition order, into one.
#[derive(Debug)]
pub struct OrderedConcatExec {
    input: Arc<dyn ExecutionPlan>,
    cache: Arc<PlanProperties>,
}

impl OrderedConcatExec {
    /// One ordered partition over `input`.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let cache = crate::plan::streaming(input.schema(), Partitioning::UnknownPartitioning(1));
        OrderedConcatExec { input, cache }
    }
}

impl DisplayAs for OrderedConcatExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "OrderedConcatExec")
    }
}

impl ExecutionPlan for OrderedConcatExec {
    fn name(&self) -> &str {
        "OrderedConcatExec"
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
        let input = crate::plan::only_child("OrderedConcatExec", children)?;
        Ok(Arc::new(OrderedConcatExec::new(input)))
    }

    /// It consumes every partition of its input in its one output partition, as a collect
    /// does: said so, a cluster's task builder (Ballista's `restrict`) gives its task all of
    /// them instead of the task's own slice. The node is added after the physical optimizer
    /// ran (when the write is shaped), so no coalesce is put under it for this.
    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        InputDistributionRequirements::new(vec![Distribution::SinglePartition])
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let n = self
            .input
            .properties()
            .output_partitioning()
            .partition_count();
        let mut receivers = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let mut stream = self.input.execute(i, Arc::clone(&context))?;
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(AHEAD);
            tasks.push(SpawnedTask::spawn(async move {
                while let Some(batch) = stream.next().await {
                    if tx.send(batch).await.is_err() {
                        break; // the output was dropped
                    }
                }
            }));
            receivers.push(rx);
        }
        // The tasks live as long as the output stream (dropping it aborts them).
        let stream = futures::stream::iter(receivers)
            .flat_map(|rx| {
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
                )
            })
            .map(move |b| {
                let _keep = &tasks;
                b
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.input.schema(),
            stream,
        )))
    }
}
