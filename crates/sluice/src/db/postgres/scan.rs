//! The plan side of a PostgreSQL read: a table ([`PgTable`]) whose scan ([`PgScanExec`])
//! reads each partition through one binary `COPY` in the read's snapshot.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::{FromSql, Type};

use super::types::Column;
use super::PgRead;
use crate::ledger::rejects::{BooksRef, RejectRecord};
use crate::services::Services;

/// A PostgreSQL read as a table: its scan reads the columns asked for.
#[derive(Debug)]
pub struct PgTable {
    read: Arc<PgRead>,
    rejects: Arc<crate::ledger::rejects::Rejects>,
    connector: Arc<super::Connector>,
    schema: SchemaRef,
    /// Each row's origin is appended ([`crate::ledger::origin`]).
    origin: bool,
}

impl PgTable {
    /// The table of `read` (through `connector`), counted in `rejects`.
    pub fn new(
        read: Arc<PgRead>,
        rejects: Arc<crate::ledger::rejects::Rejects>,
        connector: Arc<super::Connector>,
    ) -> PgTable {
        let schema = Arc::new(read.schema());
        PgTable {
            read,
            rejects,
            connector,
            schema,
            origin: false,
        }
    }

    /// The same table with each row's origin in three more columns.
    pub fn with_origin(mut self) -> PgTable {
        let mut fields: Vec<_> = self.schema.fields().iter().cloned().collect();
        fields.extend(crate::ledger::origin::fields());
        self.schema = Arc::new(Schema::new(fields));
        self.origin = true;
        self
    }
}

#[async_trait]
impl TableProvider for PgTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The scan finds its books and connection in the session, by the books' id.
        let services = Services::of(state.config())?;
        services.keep_books(&self.rejects);
        services.keep_connector(self.rejects.id(), Arc::clone(&self.connector));
        let own = self.read.columns.len();
        // The origin columns are made by the scan, not read.
        let (columns, schema) = match projection {
            Some(p) => (
                Some(p.iter().copied().filter(|i| *i < own).collect::<Vec<_>>()),
                Arc::new(self.schema.project(p)?),
            ),
            None => (None, Arc::clone(&self.schema)),
        };
        // The origin comes as all three columns, last, or not at all.
        let origin = self.origin && projection.is_none_or(|p| p.iter().any(|i| *i >= own));
        Ok(Arc::new(PgScanExec::new(
            Arc::clone(&self.read),
            columns,
            schema,
            self.rejects.books(),
            origin,
        )))
    }
}

/// Reads the partitions of a PostgreSQL read, one binary `COPY` each, every row counted in
/// its books: the rows each partition streamed, the rows it passed on and the rows it
/// rejected (a value Arrow cannot hold), and for the read the server's own count of the
/// snapshot.
#[derive(Debug)]
pub struct PgScanExec {
    read: Arc<PgRead>,
    /// The read's columns this scan reads (by index; all when `None`).
    columns: Option<Vec<usize>>,
    books: BooksRef,
    /// The output ends with each row's origin ([`crate::ledger::origin`]).
    origin: bool,
    scan_id: u64,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl PgScanExec {
    fn new(
        read: Arc<PgRead>,
        columns: Option<Vec<usize>>,
        schema: SchemaRef,
        books: BooksRef,
        origin: bool,
    ) -> PgScanExec {
        let cache = crate::plan::streaming(
            Arc::clone(&schema),
            Partitioning::UnknownPartitioning(read.partitions.len().max(1)),
        );
        PgScanExec {
            read,
            columns,
            books,
            origin,
            scan_id: crate::ledger::next_scan_id(),
            schema,
            cache,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The read.
    pub fn read(&self) -> &PgRead {
        &self.read
    }
}

impl DisplayAs for PgScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "PgScanExec: {}, rows={}, partitions={}",
            self.read.display,
            self.read.rows,
            self.read.partitions.len()
        )?;
        if matches!(t, DisplayFormatType::Verbose | DisplayFormatType::Default) {
            let ranges: Vec<String> = self
                .read
                .partitions
                .iter()
                .map(|p| p.clone().unwrap_or_else(|| "all rows".into()))
                .collect();
            write!(f, ": [{}]", ranges.join("], ["))?;
        }
        Ok(())
    }
}

/// Any value, as its bytes in PostgreSQL's binary form.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl ExecutionPlan for PgScanExec {
    fn name(&self) -> &str {
        "PgScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::plan::leaf(self, children)
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
        let rejects = services.books_for(&self.books, context.session_config())?;
        let connector = services.connector(self.books.id).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "{}: the read's connection is not in this session",
                self.read.display
            ))
        })?;
        let read = Arc::clone(&self.read);
        let columns: Vec<usize> = match &self.columns {
            Some(c) => c.clone(),
            None => (0..read.columns.len()).collect(),
        };
        let sql = read.copy_sql(partition, &columns);
        let kinds: Vec<_> = columns.iter().map(|i| read.columns[*i].clone()).collect();
        let schema = Arc::clone(&self.schema);
        let origin = self.origin;
        let batch_size = context.session_config().batch_size().max(1);
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let scan = self.scan_id;
        let parts = read.partitions.len().max(1);
        let task = crate::ledger::rejects::Task {
            node: scan,
            partition,
        };
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&schema), 2);
        let tx = builder.tx();
        builder.spawn(async move {
            rejects.begin(task).map_err(DataFusionError::from)?;
            let at = crate::ledger::ReadAt {
                file: read.display.clone(),
                start: partition as u64,
                scan,
                task,
            };
            rejects.ledger.begin(&at);
            let fail = |e: crate::error::Error| DataFusionError::External(Box::new(e));
            let client = connector.reader(&read.snapshot).await.map_err(fail)?;
            let stream = client
                .copy_out(sql.as_str())
                .await
                .map_err(|e| fail(super::pg_error(&read.display, e)))?;
            // A binary COPY of no column still sends one field per row: `1`.
            let types: Vec<Type> = if kinds.is_empty() {
                vec![Type::INT4]
            } else {
                kinds.iter().map(|_| Type::UNKNOWN).collect()
            };
            let rows = BinaryCopyOutStream::new(stream, &types);
            futures::pin_mut!(rows);
            let mut cols: Vec<Column> = kinds
                .iter()
                .map(|c| Column::new(&c.kind, batch_size))
                .collect();
            let mut keep: Vec<bool> = Vec::with_capacity(batch_size);
            let mut streamed = 0u64;
            let mut in_batch = 0usize;
            let flush = |cols: &mut Vec<Column>, keep: &mut Vec<bool>, in_batch: usize| {
                let mut arrays: Vec<ArrayRef> = cols.iter_mut().map(Column::finish).collect();
                if origin {
                    // A database row has no line: 0, as for a file read in ranges.
                    let lines = Arc::new(UInt64Array::from(vec![0u64; in_batch]));
                    arrays.extend(crate::ledger::origin::without_offsets(
                        &read.display,
                        lines,
                        in_batch,
                    )?);
                }
                let batch = RecordBatch::try_new_with_options(
                    Arc::clone(&schema),
                    arrays,
                    &RecordBatchOptions::new().with_row_count(Some(in_batch)),
                )?;
                let batch = if keep.iter().all(|k| *k) {
                    batch
                } else {
                    filter_record_batch(&batch, &BooleanArray::from(std::mem::take(keep)))?
                };
                keep.clear();
                Ok::<_, DataFusionError>(batch)
            };
            while let Some(row) = rows.next().await {
                let row = row.map_err(|e| fail(super::pg_error(&read.display, e)))?;
                streamed += 1;
                let mut bad: Option<(String, String)> = None;
                for (i, col) in cols.iter_mut().enumerate() {
                    if bad.is_some() {
                        col.push_null();
                        continue;
                    }
                    let raw: Option<Raw> = row
                        .try_get(i)
                        .map_err(|e| fail(super::pg_error(&read.display, e)))?;
                    if let Err(what) = col.push(raw.map(|r| r.0)) {
                        col.push_null();
                        bad = Some((kinds[i].name.clone(), what));
                    }
                }
                keep.push(bad.is_none());
                in_batch += 1;
                if let Some((column, what)) = bad {
                    let record = RejectRecord {
                        file: read.display.clone(),
                        line: 0,
                        column: Some(column.clone()),
                        kind: "type_mismatch",
                        message: format!(
                            "partition {partition}, row {streamed}: column '{column}': {what}"
                        ),
                        columnar: true,
                        ..RejectRecord::default()
                    };
                    rejects
                        .bad_row(record, &at)
                        .map_err(DataFusionError::from)?;
                }
                if in_batch == batch_size {
                    let batch = flush(&mut cols, &mut keep, in_batch)?;
                    in_batch = 0;
                    if !send(&tx, batch, &rejects, &at, &metrics).await {
                        return Ok(()); // the consumer went away
                    }
                }
            }
            if in_batch > 0 {
                let batch = flush(&mut cols, &mut keep, in_batch)?;
                if !send(&tx, batch, &rejects, &at, &metrics).await {
                    return Ok(());
                }
            }
            // The rows the partition streamed, and for the read the server's own count.
            rejects.ledger.framed(&at, streamed);
            rejects.ledger.columnar_part_done(&at, read.rows, parts);
            Ok(())
        });
        Ok(builder.build())
    }
}

/// Passes `batch` on, counted: false when the consumer went away.
async fn send(
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
    batch: RecordBatch,
    rejects: &crate::ledger::rejects::Rejects,
    at: &crate::ledger::ReadAt,
    metrics: &BaselineMetrics,
) -> bool {
    let ok = batch.num_rows() as u64;
    if ok == 0 {
        return true;
    }
    rejects.count_ok(at, ok);
    metrics.record_output(ok as usize);
    tx.send(Ok(batch)).await.is_ok()
}
