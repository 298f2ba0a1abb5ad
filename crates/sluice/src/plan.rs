//! Small helpers shared by sluice's own plan nodes (scans, stages, the ordered concat).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::stats::Precision;
use datafusion::common::Statistics;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};

/// Properties of a node that streams batches as they come, bounded, with no known order.
pub(crate) fn streaming(schema: SchemaRef, partitioning: Partitioning) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        partitioning,
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

/// `with_new_children` of a leaf: only an empty list is valid.
pub(crate) fn leaf(
    node: Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if children.is_empty() {
        Ok(node)
    } else {
        Err(DataFusionError::Internal(format!(
            "{} has no children",
            node.name()
        )))
    }
}

/// The single child handed to `with_new_children` of a one-child node.
pub(crate) fn only_child(
    name: &str,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let [child] = <[_; 1]>::try_from(children)
        .map_err(|_| DataFusionError::Internal(format!("{name} has one child")))?;
    Ok(child)
}

/// What a scan of `bytes` bytes of files is likely to hold in memory, for the optimizer: the
/// size alone, as an estimate (`Inexact`); rows and column values are unknown. DataFusion's
/// join selection broadcasts the smaller side of a join (`CollectLeft`) when its size is
/// under `hash_join_single_partition_threshold`, instead of hash-repartitioning both sides;
/// without it a 50-row lookup file joined to millions of rows sends all of them through a
/// repartition.
pub(crate) fn estimated_statistics(schema: &SchemaRef, bytes: u64) -> Arc<Statistics> {
    let mut stats = Statistics::new_unknown(schema);
    stats.total_byte_size = Precision::Inexact(usize::try_from(bytes).unwrap_or(usize::MAX));
    Arc::new(stats)
}

/// The items of one partition of a scan (`Some(p)`), or of all of them (`None`): what
/// partition statistics are asked about.
pub(crate) fn partition_items<T>(partitions: &[Vec<T>], partition: Option<usize>) -> Vec<&T> {
    match partition {
        Some(p) => partitions.get(p).into_iter().flatten().collect(),
        None => partitions.iter().flatten().collect(),
    }
}

/// Ids for plan nodes, books and stages, unique in the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh id for a plan node, a set of books or a stage.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}
