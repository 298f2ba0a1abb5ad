//! A table over an explicit list of files that share one layout.
//!
//! DataFusion's `ListingTable` lists a prefix itself and can only attach Hive-style partition
//! values. sluice already knows the exact files (deduplicated, in order) and wants each row to
//! carry its source path, so this provider builds the file scan directly: files become
//! [`PartitionedFile`]s carrying the path as a partition value, grouped over the target
//! partitions. The physical optimizer still splits large files into byte ranges.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;

/// A set of files read with one format and one file schema.
#[derive(Debug)]
pub struct FileSetTable {
    format: Arc<dyn FileFormat>,
    store_url: ObjectStoreUrl,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    table_schema: SchemaRef,
    files: Vec<PartitionedFile>,
}

/// One file of a [`FileSetTable`].
#[derive(Debug, Clone)]
pub struct TableFile {
    /// Object-store path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// One value per partition field (Hive folders, the file column).
    pub partition_values: Vec<ScalarValue>,
}

impl FileSetTable {
    /// Creates the table. `partition_fields` are columns whose value is constant per file
    /// (Hive folder values, the source path), given in each [`TableFile`].
    pub fn new(
        format: Arc<dyn FileFormat>,
        store_url: ObjectStoreUrl,
        file_schema: SchemaRef,
        partition_fields: Vec<Field>,
        files: Vec<TableFile>,
    ) -> Self {
        let partition_fields: Vec<FieldRef> = partition_fields.into_iter().map(Arc::new).collect();
        let mut fields: Vec<FieldRef> = file_schema.fields().iter().cloned().collect();
        fields.extend(partition_fields.iter().cloned());
        let table_schema = Arc::new(Schema::new(fields));
        let files = files
            .into_iter()
            .map(|f| PartitionedFile::new(f.path, f.size).with_partition_values(f.partition_values))
            .collect();
        FileSetTable {
            format,
            store_url,
            file_schema,
            partition_fields,
            table_schema,
            files,
        }
    }
}

#[async_trait]
impl TableProvider for FileSetTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.table_schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.table_schema.project(p)?),
                None => Arc::clone(&self.table_schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let table_schema = TableSchemaBuilder::new(Arc::clone(&self.file_schema))
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let source = self.format.file_source(table_schema);
        let groups = FileGroup::new(self.files.clone())
            .split_files(state.config().target_partitions().max(1));
        let config = FileScanConfigBuilder::new(self.store_url.clone(), source)
            .with_file_groups(groups)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        self.format.create_physical_plan(state, config).await
    }
}
