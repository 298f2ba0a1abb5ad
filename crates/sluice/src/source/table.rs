//! A table over an explicit list of files that share one layout.
//!
//! DataFusion's `ListingTable` lists a prefix itself and can only attach Hive-style partition
//! values. sluice already knows the exact files (deduplicated, in order) and wants each row to
//! carry its source path, so this provider builds the file scan directly: files become
//! [`PartitionedFile`]s carrying the path as a partition value, grouped over the target
//! partitions. Big CSV files are cut into record-aligned byte ranges here (see
//! [`super::split`]); other formats are split by DataFusion's physical optimizer.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileGroup, FileGroupPartitioner, FileScanConfigBuilder,
};
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;

use super::csv_scan::{CsvRange, CsvScanConfig, CsvScanExec};
use super::file_scan::{FileByFileExec, FilePart, OrcPart};
use super::split::{aligned_cut, Dialect, WINDOW};
use crate::ledger::rejects::{BooksRef, Rejects};

/// A set of files read with one format and one file schema.
#[derive(Debug)]
pub struct FileSetTable {
    format: Arc<dyn FileFormat>,
    store_url: ObjectStoreUrl,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    table_schema: SchemaRef,
    files: Vec<PartitionedFile>,
    displays: Vec<String>,
    display_by_path: std::collections::HashMap<String, String>,
    /// Bytes before each CSV file's header or first row (by path; none for most files).
    preamble_by_path: std::collections::HashMap<String, u64>,
    csv_split: Option<Dialect>,
    unsplit: Arc<Mutex<Vec<String>>>,
    csv_reader: Option<(CsvScanConfig, Arc<Rejects>)>,
    file_by_file: Option<(Vec<String>, Arc<Rejects>)>,
    /// The table's last three columns are each row's origin ([`crate::ledger::origin`]).
    origin: bool,
}

/// One file of a [`FileSetTable`].
#[derive(Debug, Clone)]
pub struct TableFile {
    /// Object-store path (already a store key: never parsed or encoded again).
    pub path: datafusion::object_store::path::Path,
    /// Size in bytes.
    pub size: u64,
    /// One value per partition field (Hive folders, the file column).
    pub partition_values: Vec<ScalarValue>,
    /// The name shown to the user.
    pub display: String,
    /// Bytes at its start that are no record (a CSV file's title lines).
    pub preamble: u64,
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
        let displays: Vec<String> = files.iter().map(|f| f.display.clone()).collect();
        let preamble_by_path = files
            .iter()
            .filter(|f| f.preamble > 0)
            .map(|f| (f.path.to_string(), f.preamble))
            .collect();

        let files = files
            .into_iter()
            .map(|f| {
                // `PartitionedFile::new` would parse the key again and percent-encode `%`, `#`,
                // `[`, `~` and non-ASCII letters a second time: the file would not be found.
                PartitionedFile::new_from_meta(datafusion::object_store::ObjectMeta {
                    location: f.path,
                    last_modified: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                    size: f.size,
                    e_tag: None,
                    version: None,
                })
                .with_partition_values(f.partition_values)
            })
            .collect::<Vec<PartitionedFile>>();
        let display_by_path = files
            .iter()
            .zip(&displays)
            .map(|(f, d): (&PartitionedFile, &String)| {
                (f.object_meta.location.to_string(), d.clone())
            })
            .collect();
        FileSetTable {
            format,
            store_url,
            file_schema,
            partition_fields,
            table_schema,
            files,
            displays,
            display_by_path,
            preamble_by_path,
            csv_split: None,
            unsplit: Arc::default(),
            csv_reader: None,
            file_by_file: None,
            origin: false,
        }
    }

    /// Reads the files with sluice's row-checking CSV reader instead of DataFusion's.
    pub fn with_csv_reader(mut self, config: CsvScanConfig, rejects: Arc<Rejects>) -> Self {
        self.csv_reader = Some((config, rejects));
        self
    }

    /// Reads the files one at a time per partition ([`FileByFileExec`]): per-file counts,
    /// files that break mid-read reported instead of failing the job, and rows with a null in
    /// one of the `required` columns rejected.
    pub fn with_file_by_file(mut self, required: Vec<String>, rejects: Arc<Rejects>) -> Self {
        self.file_by_file = Some((required, rejects));
        self
    }

    /// Appends each row's origin (file, line, byte offset: see [`crate::ledger::origin`])
    /// as the last three columns, for stages that may reject rows after the read. Only the
    /// row-checking readers ([`Self::with_csv_reader`], [`Self::with_file_by_file`]) carry
    /// them; a columnar file is then read whole, so its row numbers are its own.
    pub fn with_origin(mut self) -> Self {
        if !self.origin {
            let mut fields: Vec<FieldRef> = self.table_schema.fields().iter().cloned().collect();
            fields.extend(crate::ledger::origin::fields());
            self.table_schema = Arc::new(Schema::new(fields));
            self.origin = true;
        }
        self
    }

    fn preamble_of(&self, f: &PartitionedFile) -> u64 {
        self.preamble_by_path
            .get(f.object_meta.location.as_ref())
            .copied()
            .unwrap_or(0)
    }

    fn display_of(&self, f: &PartitionedFile) -> String {
        self.display_by_path
            .get(f.object_meta.location.as_ref())
            .cloned()
            .unwrap_or_else(|| f.object_meta.location.to_string())
    }

    /// One single-file scan per file (or row-group range), grouped over the partitions.
    async fn file_by_file_plan(
        &self,
        state: &dyn Session,
        source: Arc<dyn datafusion::datasource::physical_plan::FileSource>,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
        required: &[String],
        rejects: &Arc<Rejects>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let options = state.config_options();
        let partitions = state.config().target_partitions().max(1);
        let mut groups = FileGroup::new(self.files.clone()).split_files(partitions);
        // Row numbers of rejected rows are exact only when a file is read whole.
        if options.optimizer.repartition_file_scans && required.is_empty() && !self.origin {
            if let Some(split) = FileGroupPartitioner::new()
                .with_target_partitions(partitions)
                .with_repartition_file_min_size(options.optimizer.repartition_file_min_size)
                .repartition_file_groups(&groups)
            {
                groups = split;
            }
        }
        // The parts read the table's own columns; the scan appends the origin after them.
        let columns = self.table_schema.fields().len() - if self.origin { 3 } else { 0 };
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.table_schema.fields().len()).collect(),
        };
        let own: Vec<usize> = wanted.iter().copied().filter(|&i| i < columns).collect();
        let origin = own.len() < wanted.len();
        let projection = if projection.is_none() && !self.origin {
            None
        } else {
            Some(&own)
        };
        let mut parts = Vec::with_capacity(groups.len());
        for group in groups {
            let mut list = Vec::with_capacity(group.len());
            for file in group.iter() {
                let orc = (self.format.get_ext() == "orc").then(|| OrcPart {
                    file_schema: Arc::clone(&self.file_schema),
                    partition_fields: self.partition_fields.clone(),
                    projection: projection.cloned(),
                    limit,
                    range: file.range.as_ref().map(|r| (r.start, r.end)),
                    partition_values: file.partition_values.clone(),
                });
                let plan = match &orc {
                    Some(o) => o.plan(
                        &self.store_url,
                        &file.object_meta.location,
                        file.object_meta.size,
                    )?,
                    None => {
                        let config =
                            FileScanConfigBuilder::new(self.store_url.clone(), Arc::clone(&source))
                                .with_file_groups(vec![FileGroup::new(vec![file.clone()])])
                                .with_projection_indices(projection.cloned())?
                                .with_limit(limit)
                                .build();
                        self.format.create_physical_plan(state, config).await?
                    }
                };
                list.push(FilePart {
                    display: self.display_of(file),
                    plan,
                    whole: file.range.is_none(),
                    start: file.range.as_ref().map_or(0, |r| r.start.max(0) as u64),
                    location: file.object_meta.location.clone(),
                    size: file.object_meta.size,
                    orc,
                });
            }
            parts.push(list);
        }
        let schema = match projection {
            Some(p) => Arc::new(self.table_schema.project(p)?),
            None => Arc::clone(&self.table_schema),
        };
        let required = required
            .iter()
            .filter_map(|name| schema.index_of(name).ok().map(|i| (i, name.clone())))
            .collect();
        let scan = |schema| {
            Ok::<_, DataFusionError>(FileByFileExec::new(
                self.store_url.clone(),
                schema,
                parts,
                required,
                keep_books(state, rejects)?,
                limit.is_some(),
            ))
        };
        if !origin {
            return Ok(Arc::new(scan(schema)?));
        }
        // The parts' columns, then the origin; then in the order asked for.
        let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
        fields.extend(crate::ledger::origin::fields());
        let read: Arc<dyn ExecutionPlan> =
            Arc::new(scan(Arc::new(Schema::new(fields)))?.with_origin());
        let at: Vec<usize> = wanted
            .iter()
            .map(|&i| match own.iter().position(|&o| o == i) {
                Some(pos) => pos,
                None => own.len() + (i - columns),
            })
            .collect();
        if at.iter().copied().eq(0..at.len()) && at.len() == read.schema().fields().len() {
            return Ok(read);
        }
        let exprs = at
            .iter()
            .map(|&i| {
                let name = read.schema().field(i).name().clone();
                (
                    Arc::new(datafusion::physical_expr::expressions::Column::new(
                        &name, i,
                    )) as Arc<dyn datafusion::physical_expr::PhysicalExpr>,
                    name,
                )
            })
            .collect::<Vec<_>>();
        Ok(Arc::new(
            datafusion::physical_plan::projection::ProjectionExec::try_new(exprs, read)?,
        ))
    }

    /// Splits big files into record-aligned byte ranges with this CSV dialect (the format
    /// must have DataFusion's own splitting turned off). Files that cannot be cut safely are
    /// read whole and their names added to `unsplit`.
    pub fn with_csv_split(mut self, dialect: Dialect, unsplit: Arc<Mutex<Vec<String>>>) -> Self {
        self.csv_split = Some(dialect);
        self.unsplit = unsplit;
        self
    }

    /// Groups files into `partitions` groups of about equal bytes, cutting big files at
    /// record starts.
    async fn plan_csv_ranges(
        &self,
        state: &dyn Session,
        dialect: &Dialect,
        partitions: usize,
    ) -> Result<Vec<FileGroup>> {
        let min = state.config_options().optimizer.repartition_file_min_size as u64;
        let total: u64 = self.files.iter().map(|f| f.object_meta.size).sum();
        if partitions < 2 || total < min {
            return Ok(FileGroup::new(self.files.clone()).split_files(partitions));
        }
        let store = state.runtime_env().object_store(&self.store_url)?;
        let target = total.div_ceil(partitions as u64).max(1);
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new()];
        let mut filled = 0u64;
        for (file, display) in self.files.iter().zip(&self.displays) {
            let size = file.object_meta.size;
            // A cut inside the preamble would read title lines as rows.
            let preamble = self.preamble_of(file);
            let mut start = 0u64;
            while start < size {
                let room = target.saturating_sub(filled).max(1);
                let last_group = groups.len() >= partitions;
                let end = if last_group || size - start <= room {
                    size
                } else {
                    match cut_at(&store, file, start + room, dialect).await? {
                        Some(cut) if cut > start.max(preamble) && cut < size => cut,
                        _ => {
                            if let Ok(mut names) = self.unsplit.lock() {
                                if !names.contains(display) {
                                    names.push(display.clone());
                                }
                            }
                            size
                        }
                    }
                };
                let part = if start == 0 && end == size {
                    file.clone()
                } else {
                    file.clone().with_range(start as i64, end as i64)
                };
                if let Some(g) = groups.last_mut() {
                    g.push(part);
                }
                filled += end - start;
                start = end;
                if filled >= target && groups.len() < partitions {
                    groups.push(Vec::new());
                    filled = 0;
                }
            }
        }
        groups.retain(|g| !g.is_empty());
        Ok(groups.into_iter().map(FileGroup::new).collect())
    }
}

/// Reads a window around `target` and returns the first record start at or after it.
async fn cut_at(
    store: &Arc<dyn ObjectStore>,
    file: &PartitionedFile,
    target: u64,
    dialect: &Dialect,
) -> Result<Option<u64>> {
    let size = file.object_meta.size;
    let from = target.saturating_sub(WINDOW);
    let to = (target + WINDOW).min(size);
    let bytes = store
        .get_range(&file.object_meta.location, from..to)
        .await?;
    Ok(aligned_cut(&bytes, (target - from) as usize, dialect).map(|c| from + c as u64))
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
        let partitions = state.config().target_partitions().max(1);
        let groups = match &self.csv_split {
            Some(dialect) => self.plan_csv_ranges(state, dialect, partitions).await?,
            None => FileGroup::new(self.files.clone()).split_files(partitions),
        };
        if let Some((required, rejects)) = &self.file_by_file {
            return self
                .file_by_file_plan(state, source, projection, limit, required, rejects)
                .await;
        }
        if let Some((config, rejects)) = &self.csv_reader {
            let ranges = groups
                .iter()
                .map(|g| {
                    g.iter()
                        .map(|f| {
                            let size = f.object_meta.size;
                            let (start, end) = f
                                .range
                                .as_ref()
                                .map(|r| (r.start as u64, r.end as u64))
                                .unwrap_or((0, size));
                            CsvRange {
                                location: f.object_meta.location.clone(),
                                display: self.display_of(f),
                                start,
                                end,
                                size,
                                preamble: self.preamble_of(f),
                                partition_values: f.partition_values.clone(),
                            }
                        })
                        .collect()
                })
                .collect();
            let mut config = config.clone();
            config.batch_size = state.config().batch_size();
            config.origin = self.origin;
            return Ok(Arc::new(CsvScanExec::try_new(
                config,
                self.store_url.clone(),
                ranges,
                projection.cloned(),
                keep_books(state, rejects)?,
            )?));
        }
        if self.origin {
            return Err(DataFusionError::Internal(
                "only sluice's own readers carry rows' origins".into(),
            ));
        }
        let config = FileScanConfigBuilder::new(self.store_url.clone(), source)
            .with_file_groups(groups)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        self.format.create_physical_plan(state, config).await
    }
}

/// Puts `rejects` among the session's services for the scan nodes to find when they run.
fn keep_books(state: &dyn Session, rejects: &Arc<Rejects>) -> Result<BooksRef> {
    crate::services::Services::of(state.config())?.keep_books(rejects);
    Ok(rejects.books())
}
