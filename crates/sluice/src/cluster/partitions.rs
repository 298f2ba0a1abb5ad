//! A sluice scan as a DataFusion [`FileSource`] whose "files" are the scan's partitions, so
//! Ballista restricts it to each task's partitions like one of DataFusion's own file scans.
//!
//! Ballista gives each task a copy of its stage's plan cut down to the task's partitions,
//! and it can cut only the leaves it knows: a `DataSourceExec` over a [`FileScanConfig`]
//! (it keeps the file groups of the task's partitions), shuffle readers, in-memory data. A
//! sluice scan (the row-checking CSV/NDJSON scan, the file-by-file Parquet/ORC scan) has its
//! own reading and its own books, so it cannot be one of DataFusion's file formats; but its
//! partitions can be the files of one. [`partitioned`] turns a scan of N partitions into a
//! `DataSourceExec` of N file groups, group `p` holding one [`PartitionedFile`] that carries
//! partition `p` of the scan as a one-partition scan ([`ScanPart`], in the file's
//! extensions). Ballista keeps the groups of a task's partitions, the task opens each
//! (reading partition `p`, counted under partition `p` in the books as in a local run), and
//! a scan inside a stage is read by that stage's tasks where they run — no stage and no
//! shuffle of its own (before, each partition was a union branch Ballista had to give a stage
//! of its own, and every row crossed one more shuffle).
//!
//! What travels is configuration: the codec ([`crate::codec`]) writes each group's scan as
//! plan bytes; the executor that decodes the plan binds the source to the task's context
//! (the same context the task runs in: its session's services hold the books).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileGroup, FileOpenFuture, FileOpener, FileScanConfig, FileScanConfigBuilder, FileSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::TaskContext;
use datafusion::object_store::ObjectStore;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::sort_expr::LexOrdering;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan};
use futures::{FutureExt, StreamExt};

/// One partition of a sluice scan, as a one-partition scan: the extension a
/// [`PartitionedFile`] of a [`PartitionSource`] carries.
#[derive(Debug, Clone)]
pub struct ScanPart(pub Arc<dyn ExecutionPlan>);

/// The file source whose files are the partitions of a sluice scan (see the module).
#[derive(Debug, Clone)]
pub struct PartitionSource {
    table_schema: TableSchema,
    /// The scan node the partitions are of (for display).
    scan: String,
    metrics: ExecutionPlanMetricsSet,
    /// The context of the task that decoded it, which its parts run in.
    task: Option<Arc<TaskContext>>,
}

/// What [`partitioned`] makes a `DataSourceExec` of: a sluice scan's parts and where they
/// run.
#[derive(Debug)]
pub struct Partitioned {
    /// The scan's output schema.
    pub schema: SchemaRef,
    /// The scan node's name (for display).
    pub scan: String,
    /// The store its files are in.
    pub store_url: ObjectStoreUrl,
    /// One-partition scans per file group, in order (one per group when made from a scan).
    pub groups: Vec<Vec<Arc<dyn ExecutionPlan>>>,
    /// Most rows to read (a limit pushed into the scan).
    pub limit: Option<usize>,
}

/// A sluice scan's parts as a `DataSourceExec` Ballista can restrict to a task's
/// partitions. `task`: the context its parts run in (`None` where it is only planned and
/// sent, as on the client).
pub fn partitioned(scan: Partitioned, task: Option<Arc<TaskContext>>) -> Arc<DataSourceExec> {
    let Partitioned {
        schema,
        scan,
        store_url,
        groups: parts,
        limit,
    } = scan;
    let source = PartitionSource {
        table_schema: TableSchema::from(schema),
        scan,
        metrics: ExecutionPlanMetricsSet::new(),
        task,
    };
    let mut p = 0usize;
    let groups = parts
        .into_iter()
        .map(|group| {
            FileGroup::new(
                group
                    .into_iter()
                    .map(|part| {
                        let file = part_file(p, part);
                        p += 1;
                        file
                    })
                    .collect(),
            )
        })
        .collect();
    let config = FileScanConfigBuilder::new(store_url, Arc::new(source))
        .with_file_groups(groups)
        .with_limit(limit)
        // Each group is read by the partition it is: no stealing of another partition's
        // files (the books count a partition's rows under its own number).
        .with_preserve_order(true)
        .build();
    DataSourceExec::from_data_source(config)
}

/// The file standing for one partition (`n`: its number among the scan's parts, for its
/// name; what it reads is `part`).
fn part_file(n: usize, part: Arc<dyn ExecutionPlan>) -> PartitionedFile {
    let mut file = PartitionedFile::new(format!("{}-partition-{n}", part.name()), 0);
    // The part's own estimate (the optimizer's, for a join's sides): what the scan gave.
    file.statistics = datafusion::physical_plan::StatisticsContext::new()
        .compute(part.as_ref(), &Default::default())
        .ok();
    file.extensions.insert(ScanPart(part));
    file
}

/// What a `DataSourceExec` made by [`partitioned`] holds (its file groups as they are now:
/// a task's, once restricted); `None` for any other plan node.
pub fn parts_of(plan: &dyn ExecutionPlan) -> Option<Result<Partitioned>> {
    let exec = plan.downcast_ref::<DataSourceExec>()?;
    let config = exec.data_source().downcast_ref::<FileScanConfig>()?;
    let source = config.file_source().downcast_ref::<PartitionSource>()?;
    let groups = config
        .file_groups
        .iter()
        .map(|g| g.iter().map(scan_part).collect::<Result<Vec<_>>>())
        .collect::<Result<Vec<_>>>();
    Some(groups.map(|groups| Partitioned {
        schema: Arc::clone(source.table_schema.file_schema()),
        scan: source.scan.clone(),
        store_url: config.object_store_url.clone(),
        groups,
        limit: config.limit,
    }))
}

/// The scan a file of a [`PartitionSource`] stands for.
fn scan_part(file: &PartitionedFile) -> Result<Arc<dyn ExecutionPlan>> {
    file.extensions
        .get::<ScanPart>()
        .map(|p| Arc::clone(&p.0))
        .ok_or_else(|| {
            DataFusionError::Internal(format!(
                "{} is not a partition of a sluice scan",
                file.object_meta.location
            ))
        })
}

/// A task's context as one it can hand on (`TaskContext` is not `Clone`).
pub fn shared_context(ctx: &TaskContext) -> Arc<TaskContext> {
    Arc::new(TaskContext::new(
        ctx.task_id(),
        ctx.session_id(),
        ctx.session_config().clone(),
        ctx.scalar_functions().clone(),
        ctx.higher_order_functions().clone(),
        ctx.aggregate_functions().clone(),
        ctx.window_functions().clone(),
        ctx.runtime_env(),
    ))
}

/// Opens a partition: runs its one-partition scan in the task's context.
struct PartOpener {
    task: Arc<TaskContext>,
}

impl FileOpener for PartOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let stream = scan_part(&file)?.execute(0, Arc::clone(&self.task))?;
        Ok(futures::future::ready(Ok(stream.boxed())).boxed())
    }
}

impl FileSource for PartitionSource {
    fn create_file_opener(
        &self,
        _object_store: Arc<dyn ObjectStore>,
        _base_config: &FileScanConfig,
        _partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        let task = self.task.clone().ok_or_else(|| {
            DataFusionError::Internal(format!(
                "this {} was cut into partitions for a cluster: it runs in the task that \
                 decodes it",
                self.scan
            ))
        })?;
        Ok(Arc::new(PartOpener { task }))
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, _batch_size: usize) -> Arc<dyn FileSource> {
        // The parts were planned with the job's batch size.
        Arc::new(self.clone())
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        "sluice"
    }

    fn fmt_extra(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, ", scan={}", self.scan)
    }

    /// A partition is read whole, by the scan's own splitting (records on range ends,
    /// quoted newlines): never cut by byte ranges here.
    fn supports_repartitioning(&self) -> bool {
        false
    }

    fn repartitioned(
        &self,
        _target_partitions: usize,
        _repartition_file_min_size: usize,
        _output_ordering: Option<LexOrdering>,
        _config: &FileScanConfig,
    ) -> Result<Option<FileScanConfig>> {
        Ok(None)
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
}
