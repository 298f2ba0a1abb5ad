//! Reading inputs: resolving paths, inferring and merging schemas, and building one
//! DataFrame that unions every file by column name.

/// The counting store wrapper (moved to [`crate::storage::counting`]).
pub use crate::storage::counting;
pub mod csv_scan;
pub mod dialect;
pub(crate) mod fast_csv;
pub mod file_scan;
/// File formats (moved to [`crate::storage::format`]).
pub use crate::storage::format;
pub(crate) mod framer;
pub(crate) mod guess;
pub mod hive;
pub mod infer;
pub mod merge;
pub mod remote;
pub mod resolve;
pub mod split;
pub mod table;
pub mod temporal;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::{Column, ScalarValue};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{cast, lit, Expr};
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;

/// The rejects and the read side of the row ledger live in [`crate::ledger`].
pub use crate::ledger::rejects;
pub use crate::ledger::rejects::{OnError, Rejects};
pub use format::{Compression, CsvOptions, Format, NewlinesInValues};
pub use hive::HiveColumn;
pub use resolve::InputFile;

use crate::error::{Error, Result};
use format::CsvRules;
use merge::{merge_schemas, type_name, FileSchema};

/// Default of [`ReadOptions::max_record_bytes`]: 64 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 64 << 20;

/// Default of [`ReadOptions::max_compression_ratio`]: 100 bytes out per compressed byte
/// (Apache POI's limit for ZIP entries). Real data compresses 3-20x; gzip cannot pass ~1030x.
pub const DEFAULT_MAX_COMPRESSION_RATIO: u64 = 100;

/// How to read the inputs (the `[source]` section of a pipeline, or `ingest` flags).
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Files, directories and globs, in any mix.
    pub paths: Vec<String>,
    /// Force one format for every file instead of telling it from the extension.
    pub format: Option<Format>,
    /// CSV dialect.
    pub csv: CsvOptions,
    /// Align columns by name across files (default). When off, columns align by position
    /// and every file must have the same number of columns.
    pub union_by_name: bool,
    /// An explicit schema (`id BIGINT, ts TIMESTAMP`, or a path to a file holding it):
    /// listed columns get these types, other columns keep their inferred types.
    pub schema: Option<String>,
    /// Add a column with this name holding each row's source file.
    pub file_column: Option<String>,
    /// Rows sampled per file for type inference.
    pub infer_rows: usize,
    /// Turn `key=value` folders below an input folder or glob root into columns (like
    /// Spark and DuckDB). Only applies when every file sits under the same keys.
    pub hive_partitioning: bool,
    /// What to do with rows that cannot be read (CSV files).
    pub on_error: OnError,
    /// Files at least this big are split into byte ranges (default 1 MiB).
    pub split_min_size: Option<usize>,
    /// Inputs matching no file give an empty result instead of an error (the output then
    /// has the `schema` given, or no columns).
    pub allow_empty: bool,
    /// Files that cannot be read (missing, corrupt, cut off mid-read) are reported and the
    /// rest is written. Without it, such a job commits nothing and fails naming the files
    /// (in `skip` and `reject` modes; `fail` stops at the first).
    pub allow_failed_files: bool,
    /// Follow symbolic links that lead out of a listed folder or glob root (never by
    /// default: a link out is named in `skipped_files` instead).
    pub follow_symlinks: bool,
    /// Longest CSV record or NDJSON line, in bytes: a longer one is a rejected row
    /// (`record_too_large`), skipped without being held in memory. Default 64 MiB.
    pub max_record_bytes: u64,
    /// Most bytes a `.gz`/`.zst`/`.bz2`/`.xz` input may decompress to per compressed byte,
    /// checked once it has produced 64 MiB; past it the file fails (a decompression bomb).
    /// 0 removes the limit. Default 100.
    pub max_compression_ratio: u64,
    /// Options of remote object stores (endpoint, region, credentials...).
    pub storage: remote::StorageOptions,
    /// What to read of a database input (`postgres://...`): table or query, partitions.
    pub database: crate::db::DbOptions,
}

impl ReadOptions {
    /// Checks option values that cannot work together.
    pub fn validate(&self) -> Result<()> {
        if self.paths.is_empty() {
            return Err(Error::Config("no inputs given".into()));
        }
        if self.infer_rows == 0 {
            return Err(Error::Config("infer_rows must be at least 1".into()));
        }
        let csv = &self.csv;
        let quote = csv.quote.unwrap_or(b'"');
        if csv.delimiter == Some(quote) {
            return Err(Error::Config(format!(
                "the delimiter and the quote are both '{}'",
                quote as char
            )));
        }
        if csv
            .comment
            .is_some_and(|c| c == quote || Some(c) == csv.delimiter)
        {
            return Err(Error::Config(
                "the comment character is also the delimiter or the quote".into(),
            ));
        }
        if self
            .file_column
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(Error::Config("the file column needs a name".into()));
        }
        Ok(())
    }
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            paths: Vec::new(),
            format: None,
            csv: CsvOptions::default(),
            union_by_name: true,
            schema: None,
            file_column: None,
            infer_rows: 1000,
            hive_partitioning: true,
            on_error: OnError::default(),
            split_min_size: None,
            allow_empty: false,
            allow_failed_files: false,
            follow_symlinks: false,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_compression_ratio: DEFAULT_MAX_COMPRESSION_RATIO,
            storage: remote::StorageOptions::new(),
            database: crate::db::DbOptions::default(),
        }
    }
}

/// One file with what was learned about it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The resolved file.
    pub input: InputFile,
    /// Its own schema (inferred or stored).
    pub schema: SchemaRef,
    /// A CSV file's dialect, as detected or given.
    pub dialect: Option<dialect::Dialect>,
}

/// Resolved inputs with their merged schema, ready to become a DataFrame.
#[derive(Debug, Clone)]
pub struct Source {
    /// Every input file, in input order, without duplicates.
    pub files: Vec<SourceFile>,
    /// Files inside directories that were skipped because their format is unknown.
    pub skipped: Vec<String>,
    /// The schema every row is read into (without the file column); Hive partition columns
    /// come last.
    pub schema: SchemaRef,
    /// Columns taken from Hive-style folder names, with one value per file.
    pub hive_columns: Vec<HiveColumn>,
    /// Widening decisions, one line each.
    pub decisions: Vec<String>,
    /// Big CSV files that could not be cut at a record boundary and were read whole
    /// (filled in when the scan is planned).
    pub unsplit: Arc<std::sync::Mutex<Vec<String>>>,
    /// Bad rows and per-file row counts.
    pub rejects: Arc<Rejects>,
    /// Columns declared `NOT NULL` in the explicit schema: a row with a null there is a bad
    /// row (`null_in_not_null`).
    pub required: Vec<String>,
    /// A database read, instead of files (see [`crate::db`]).
    pub database: Option<Arc<crate::db::postgres::PgRead>>,
    /// The connection of the database read (it holds the read's snapshot).
    connector: Option<Arc<crate::db::postgres::Connector>>,
    options: ReadOptions,
}

impl Source {
    /// Resolves the inputs, samples every file's schema in parallel and merges them.
    pub async fn open(ctx: &SessionContext, options: ReadOptions) -> Result<Source> {
        options.validate()?;
        if options.paths.iter().any(|p| crate::db::is_database(p)) {
            return Source::open_database(ctx, options).await;
        }
        if options.database.is_set() {
            return Err(Error::Config(
                "table, query and partition options read a database: give a postgres:// input"
                    .into(),
            ));
        }
        let tolerate = options.on_error != OnError::Fail;
        let (files, skipped, missing) = resolve_all(ctx, &options, tolerate).await?;
        if files.is_empty() && options.allow_empty && missing.is_empty() {
            return Source::empty(ctx, skipped, options).await;
        }
        if files.is_empty() {
            return Err(match missing.first() {
                Some(m) => Error::NotFound(m.clone()),
                None => Error::NoMatch(options.paths.join(" ")),
            });
        }
        let state = ctx.state();
        let rejects = Arc::new(Rejects::new(options.on_error));
        rejects.allow_failed_files(options.allow_failed_files);
        for m in &missing {
            rejects.file_failed(m, "not found");
        }
        let csv = &options.csv;
        let infer_rows = options.infer_rows.max(1);
        type Described = (SchemaRef, Option<dialect::Dialect>);
        let results: Vec<(InputFile, Result<Described>)> = futures::stream::iter(files)
            .map(|input| {
                let state = &state;
                let store = ObjectStoreUrl::parse(&input.store)
                    .and_then(|url| ctx.runtime_env().object_store(url));
                async move {
                    // A zero-byte NDJSON file holds zero records (that is how NDJSON writes
                    // an empty result); a zero-byte CSV file lacks even its header and a
                    // zero-byte Parquet/ORC file its footer: whole-file faults.
                    let schema = match store {
                        _ if input.size == 0 && input.format == Format::Ndjson => {
                            Ok((Arc::new(Schema::empty()), None))
                        }
                        _ if input.size == 0 => {
                            Err(Error::file(&input.display, "file is empty (0 bytes)"))
                        }
                        Err(e) => Err(Error::file(&input.display, e)),
                        Ok(store) => {
                            // Read each file's footer or sample in its own task: a reader that
                            // panics on a corrupt file costs that file, not the job.
                            let (state, file, csv) = (state.clone(), input.clone(), csv.clone());
                            let task = SpawnedTask::spawn(async move {
                                infer::infer_file_schema(&state, &store, &file, &csv, infer_rows)
                                    .await
                            });
                            match task.join().await {
                                Ok(result) => result,
                                Err(e) => Err(Error::file(
                                    &input.display,
                                    format!("the reader crashed on this file (corrupt?): {e}"),
                                )),
                            }
                        }
                    };
                    (input, schema)
                }
            })
            .buffered(16)
            .collect()
            .await;
        // Whole-file faults stop the job in `fail` mode; otherwise the file is reported in
        // `files_failed` and the others are read.
        let mut described: Vec<SourceFile> = Vec::with_capacity(results.len());
        let mut first_failure = None;
        for (input, schema) in results {
            match schema {
                Ok((schema, dialect)) => described.push(SourceFile {
                    input,
                    schema,
                    dialect,
                }),
                Err(e) if options.on_error == OnError::Fail => return Err(e),
                Err(e) => {
                    let reason = match &e {
                        Error::File { reason, .. } => reason.clone(),
                        other => other.to_string(),
                    };
                    rejects.file_failed(&input.display, &reason);
                    first_failure.get_or_insert(e);
                }
            }
        }
        if described.is_empty() {
            return Err(first_failure.unwrap_or_else(|| Error::NoMatch(options.paths.join(" "))));
        }

        let explicit = match &options.schema {
            Some(spec) => Some(parse_schema(ctx, spec).await?),
            None => None,
        };
        let named = match &explicit {
            Some(e) => name_headerless(&mut described, e, options.csv.header == Some(false)),
            None => Vec::new(),
        };
        let (schema, mut decisions, required) =
            target_schema(&described, &options, explicit.as_ref())?;
        decisions.extend(named);
        // A file without a NOT NULL column would reject every row: it is a whole-file fault.
        if options.union_by_name && !required.is_empty() {
            let mut kept = Vec::with_capacity(described.len());
            for f in described {
                let missing = required
                    .iter()
                    .find(|c| f.schema.field_with_name(c).is_err() && !is_hive_key(&f.input, c));
                match missing {
                    None => kept.push(f),
                    Some(c) => {
                        let e = Error::file(
                            &f.input.display,
                            format!("has no column '{c}', which the schema declares NOT NULL"),
                        );
                        if options.on_error == OnError::Fail {
                            return Err(e);
                        }
                        rejects.file_failed(
                            &f.input.display,
                            &format!("has no column '{c}', which the schema declares NOT NULL"),
                        );
                    }
                }
            }
            described = kept;
            if described.is_empty() {
                return Err(Error::Config(
                    "no input file has every NOT NULL column of the schema".into(),
                ));
            }
        }
        if let Some(name) = &options.file_column {
            if schema.index_of(name).is_ok() {
                return Err(Error::Config(format!(
                    "the file column '{name}' is already a column of the input: pick another name"
                )));
            }
        }
        let hive_columns = if options.hive_partitioning {
            hive::hive_columns(&described, &schema)
        } else {
            Vec::new()
        };
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(hive_columns.iter().map(|h| h.field.clone()));
        Ok(Source {
            files: described,
            skipped,
            schema: Arc::new(Schema::new(fields)),
            hive_columns,
            decisions,
            unsplit: Arc::default(),
            rejects,
            required,
            database: None,
            connector: None,
            options,
        })
    }

    /// A source reading a database (one `postgres://` input): planned in one snapshot.
    async fn open_database(ctx: &SessionContext, options: ReadOptions) -> Result<Source> {
        if options.paths.len() != 1 {
            return Err(Error::Config(
                "a database source reads one database URL: read files in a source of their own"
                    .into(),
            ));
        }
        for (set, option) in [
            (options.schema.is_some(), "schema"),
            (options.file_column.is_some(), "file column"),
        ] {
            if set {
                return Err(Error::Config(format!(
                    "the {option} option is for files: a database source's columns come from \
                     the server (cast them in a query)"
                )));
            }
        }
        let threads = ctx.state().config().target_partitions().max(1);
        let (read, connector) =
            crate::db::postgres::PgRead::open(&options.paths[0], &options.database, threads)
                .await?;
        Ok(Source {
            files: Vec::new(),
            skipped: Vec::new(),
            schema: Arc::new(read.schema()),
            hive_columns: Vec::new(),
            decisions: Vec::new(),
            unsplit: Arc::default(),
            rejects: Arc::new(Rejects::new(options.on_error)),
            required: Vec::new(),
            database: Some(Arc::new(read)),
            connector: Some(Arc::new(connector)),
            options,
        })
    }

    /// A source with no files (`allow_empty`): no rows, the explicit schema or no columns.
    async fn empty(
        ctx: &SessionContext,
        skipped: Vec<String>,
        options: ReadOptions,
    ) -> Result<Source> {
        let (schema, required) = match &options.schema {
            Some(spec) => {
                let explicit = parse_schema(ctx, spec).await?;
                let required = explicit
                    .fields()
                    .iter()
                    .filter(|f| !f.is_nullable())
                    .map(|f| f.name().clone())
                    .collect();
                let fields: Vec<Field> = explicit
                    .fields()
                    .iter()
                    .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                    .collect();
                (Schema::new(fields), required)
            }
            None => (Schema::empty(), Vec::new()),
        };
        Ok(Source {
            files: Vec::new(),
            skipped,
            schema: Arc::new(schema),
            hive_columns: Vec::new(),
            decisions: Vec::new(),
            unsplit: Arc::default(),
            rejects: Arc::new(Rejects::new(options.on_error)),
            required,
            database: None,
            connector: None,
            options,
        })
    }

    /// What a query over this source (as table `name`) did not see, one line each: rows
    /// rejected (in `rejects_dir/rejects.ndjson`), rows skipped, files that could not be
    /// read. Empty when every row was read.
    pub fn unseen_lines(&self, name: &str, rejects_dir: &Path) -> Vec<String> {
        let mut lines = Vec::new();
        let rejected = self.rejects.rejected();
        if rejected > 0 {
            lines.push(format!(
                "table {name}: {rejected} row(s) rejected, not in the result (see {})",
                rejects_dir.join("rejects.ndjson").display()
            ));
        }
        let skipped = self.rejects.skipped();
        if skipped > 0 {
            lines.push(format!(
                "table {name}: {skipped} bad row(s) skipped (on-error skip), not in the result"
            ));
        }
        for f in self.rejects.failed() {
            lines.push(format!(
                "table {name}: {} could not be read: {}",
                f.file, f.reason
            ));
        }
        lines
    }

    /// Total bytes of all input files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.input.size).sum()
    }

    /// The schema of the DataFrame (with the file column, when asked for).
    pub fn output_schema(&self) -> Schema {
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if let Some(name) = &self.options.file_column {
            fields.push(Field::new(name, DataType::Utf8, false));
        }
        Schema::new(fields)
    }

    /// Builds the DataFrame: one scan per group of files sharing a layout, each projected
    /// onto the merged schema by name, then `UNION ALL`.
    pub fn to_dataframe(&self, ctx: &SessionContext) -> Result<DataFrame> {
        self.frame(ctx, false)
    }

    /// [`Self::to_dataframe`] with each row's origin (file, line, byte offset) in three
    /// more columns at the end (see [`crate::ledger::origin`]), for stages that may reject
    /// rows after the read.
    pub fn to_dataframe_with_origin(&self, ctx: &SessionContext) -> Result<DataFrame> {
        self.frame(ctx, true)
    }

    fn frame(&self, ctx: &SessionContext, origin: bool) -> Result<DataFrame> {
        if let (Some(read), Some(connector)) = (&self.database, &self.connector) {
            let table = crate::db::postgres::scan::PgTable::new(
                Arc::clone(read),
                Arc::clone(&self.rejects),
                Arc::clone(connector),
            );
            let table = if origin { table.with_origin() } else { table };
            return Ok(ctx.read_table(Arc::new(table))?);
        }
        if self.files.is_empty() {
            let mut schema = self.output_schema();
            if origin {
                let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
                fields.extend(crate::ledger::origin::fields());
                schema = Schema::new(fields);
            }
            let schema = Arc::new(schema);
            let empty = datafusion::datasource::empty::EmptyTable::new(schema);
            return Ok(ctx.read_table(Arc::new(empty))?);
        }
        let mut groups: Vec<(GroupKey, Vec<&SourceFile>)> = Vec::new();
        let mut index: HashMap<GroupKey, usize> = HashMap::new();
        for f in &self.files {
            let key = GroupKey::of(f);
            match index.get(&key) {
                Some(&i) => groups[i].1.push(f),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((key, vec![f]));
                }
            }
        }
        let mut union: Option<DataFrame> = None;
        for (_, files) in groups {
            let df = self.group_frame(ctx, &files, origin)?;
            union = Some(match union {
                None => df,
                Some(u) => u.union(df)?,
            });
        }
        union.ok_or_else(|| Error::NoMatch(self.options.paths.join(" ")))
    }

    fn group_frame(
        &self,
        ctx: &SessionContext,
        files: &[&SourceFile],
        origin: bool,
    ) -> Result<DataFrame> {
        let first = files[0];
        let target = &self.schema;
        let data_columns = target.fields().len() - self.hive_columns.len();
        // Name lookups by hash: a file with 100,000 columns must not cost 10^10 comparisons.
        let target_index: HashMap<&str, usize> = target
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().as_str(), i))
            .collect();
        let own_types: HashMap<&str, &DataType> = first
            .schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type()))
            .collect();
        // Which target column each file column feeds.
        let mapping: Vec<(String, usize)> = first
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(pos, f)| {
                let idx = if self.options.union_by_name {
                    target_index.get(f.name().as_str()).copied()
                } else {
                    Some(pos).filter(|p| *p < data_columns)
                };
                idx.map(|i| (f.name().clone(), i)).ok_or_else(|| {
                    Error::file(
                        &first.input.display,
                        format!("column '{}' has no place in the output schema", f.name()),
                    )
                })
            })
            .collect::<Result<_>>()?;
        let read_schema: SchemaRef = if first.input.format == Format::Csv {
            Arc::new(Schema::new(
                mapping
                    .iter()
                    .map(|(name, i)| {
                        let dt = target.field(*i).data_type().clone();
                        Field::new(name, dt, !self.required.contains(name))
                    })
                    .collect::<Vec<_>>(),
            ))
        } else if first.input.format == Format::Ndjson {
            // JSON decodes into the target type (so bad values are rejected row by row),
            // except that a number or boolean cannot decode into a string column: those
            // columns are read as the file has them and cast.
            Arc::new(Schema::new(
                mapping
                    .iter()
                    .map(|(name, i)| {
                        let want = target.field(*i).data_type();
                        let own = own_types.get(name.as_str());
                        let dt = match own {
                            Some(own) if *want == DataType::Utf8 && **own != DataType::Utf8 => own,
                            _ => want,
                        };
                        Field::new(name, dt.clone(), !self.required.contains(name))
                    })
                    .collect::<Vec<_>>(),
            ))
        } else {
            Arc::clone(&first.schema)
        };
        // Splitting big files: CSV is cut at record starts found by the window parse
        // (`auto`), at line breaks (`false`: values never hold one), or not at all (`true`);
        // NDJSON is always cut at line breaks.
        let newlines = self.options.csv.newlines_in_values;
        let csv_split = first.input.compression == Compression::None
            && match first.input.format {
                Format::Csv => newlines != NewlinesInValues::Yes,
                Format::Ndjson => true,
                _ => false,
            };
        let format = infer::file_format(
            &first.input,
            &self.options.csv,
            self.options.infer_rows,
            self.options.csv.newlines_in_values != NewlinesInValues::No,
            first.dialect.as_ref(),
        )?;
        // The group's dialect (one for all its files), else the options' defaults.
        let (rules, header, trailing) = match &first.dialect {
            Some(d) => (d.rules, d.header, d.trailing),
            None => (
                self.options.csv.rules_for(&first.input.display),
                self.options.csv.header_or_default(),
                false,
            ),
        };
        // Per-file constant columns: Hive folder values, then the source path.
        let mut partition_fields: Vec<Field> =
            self.hive_columns.iter().map(|h| h.field.clone()).collect();
        if let Some(name) = &self.options.file_column {
            partition_fields.push(Field::new(name, DataType::Utf8, false));
        }
        let table_files = files
            .iter()
            .map(|f| {
                let mut values: Vec<ScalarValue> = self
                    .hive_columns
                    .iter()
                    .map(|h| h.value_for(&f.input))
                    .collect::<Result<_>>()?;
                if self.options.file_column.is_some() {
                    values.push(ScalarValue::Utf8(Some(f.input.display.clone())));
                }
                Ok(table::TableFile {
                    path: infer::store_path(&f.input)?,
                    size: f.input.size,
                    partition_values: values,
                    display: f.input.display.clone(),
                    preamble: f.dialect.as_ref().map_or(0, |d| d.preamble),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut table = table::FileSetTable::new(
            format,
            ObjectStoreUrl::parse(&first.input.store)?,
            Arc::clone(&read_schema),
            partition_fields.clone(),
            table_files,
        );
        if matches!(first.input.format, Format::Csv | Format::Ndjson) {
            let csv = &self.options.csv;
            let null_regex = csv
                .null_value
                .as_ref()
                .map(|v| regex::Regex::new(&format!("^(?:{})?$", regex::escape(v))))
                .transpose()
                .map_err(|e| Error::Config(format!("null value: {e}")))?;
            let config = csv_scan::CsvScanConfig {
                format: if first.input.format == Format::Csv {
                    csv_scan::RowFormat::Csv
                } else {
                    csv_scan::RowFormat::Json
                },
                file_schema: Arc::clone(&read_schema),
                partition_fields: partition_fields.into_iter().map(Arc::new).collect(),
                header,
                rules,
                trailing,
                null_regex,
                compression: first.input.compression.to_datafusion(),
                batch_size: 8192,
                read: if first.input.is_remote() {
                    csv_scan::REMOTE_READ
                } else {
                    csv_scan::LOCAL_READ
                },
                file_projection: None,
                max_record_bytes: self.options.max_record_bytes.max(1),
                max_compression_ratio: self.options.max_compression_ratio,
                origin: false,
            };
            table = table.with_csv_reader(config, Arc::clone(&self.rejects));
        } else {
            table = table.with_file_by_file(self.required.clone(), Arc::clone(&self.rejects));
        }
        if origin {
            table = table.with_origin();
        }
        if csv_split {
            let dialect = split::Dialect {
                rules,
                // Records as written: one more field where rows end with a delimiter.
                columns: first
                    .dialect
                    .as_ref()
                    .filter(|d| d.trailing)
                    .map_or(first.schema.fields().len(), |d| d.row_fields),
                lines: first.input.format == Format::Ndjson || newlines == NewlinesInValues::No,
            };
            table = table.with_csv_split(dialect, Arc::clone(&self.unsplit));
        }
        let df = ctx.read_table(Arc::new(table))?;
        // The file column feeding each target column, by position.
        let mut source_of: Vec<Option<usize>> = vec![None; target.fields().len()];
        for (pos, (_, t)) in mapping.iter().enumerate() {
            source_of[*t] = Some(pos);
        }
        // A file laid out exactly like the target needs no projection: DataFusion resolves
        // every column of a projection by a linear search, quadratic on wide files.
        let identity = mapping.len() == data_columns
            && mapping.iter().enumerate().all(|(pos, (name, t))| {
                *t == pos
                    && target.field(pos).name() == name
                    && read_schema.field(pos).data_type() == target.field(pos).data_type()
            });
        if identity {
            return Ok(df);
        }
        let mut exprs: Vec<Expr> = Vec::with_capacity(target.fields().len() + 1);
        for (i, field) in target.fields().iter().enumerate() {
            let expr = if i >= data_columns {
                Expr::Column(Column::new_unqualified(field.name()))
            } else {
                match source_of[i].map(|pos| (&mapping[pos].0, pos)) {
                    Some((name, pos)) => {
                        let column = Expr::Column(Column::new_unqualified(name));
                        let have = read_schema.field(pos).data_type();
                        if have == field.data_type() {
                            column
                        } else {
                            cast(column, field.data_type().clone())
                        }
                    }
                    None => lit(ScalarValue::try_from(field.data_type())?),
                }
            };
            exprs.push(expr.alias(field.name()));
        }
        if let Some(name) = &self.options.file_column {
            exprs.push(Expr::Column(Column::new_unqualified(name)));
        }
        if origin {
            for f in crate::ledger::origin::fields() {
                exprs.push(Expr::Column(Column::new_unqualified(f.name())));
            }
        }
        Ok(df.select(exprs)?)
    }

    /// For each file, the columns where it differs from the merged schema.
    pub fn differences(&self) -> Vec<(String, Vec<String>)> {
        self.files
            .iter()
            .map(|f| {
                let mut notes = Vec::new();
                let data = self.schema.fields().len() - self.hive_columns.len();
                for field in self.schema.fields().iter().take(data) {
                    match f.schema.field_with_name(field.name()) {
                        Err(_) => notes.push(format!("missing '{}' (read as NULL)", field.name())),
                        Ok(own)
                            if own.data_type() != field.data_type()
                                && own.data_type() != &DataType::Null =>
                        {
                            notes.push(format!(
                                "'{}' is {} here (read as {})",
                                field.name(),
                                type_name(own.data_type()),
                                type_name(field.data_type())
                            ))
                        }
                        Ok(_) => {}
                    }
                }
                (f.input.display.clone(), notes)
            })
            .collect()
    }
}

/// Files that can share one scan: same format, compression, dialect and column layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    store: String,
    format: Format,
    compression: Compression,
    /// A CSV file's dialect, whether it has a header and whether its rows end with a
    /// delimiter.
    dialect: Option<(CsvRules, bool, bool)>,
    columns: Vec<(String, Option<DataType>)>,
}

impl GroupKey {
    fn of(f: &SourceFile) -> GroupKey {
        // Only CSV groups read into the target types; the rest group by their own types.
        let typed = f.input.format != Format::Csv;
        GroupKey {
            store: f.input.store.clone(),
            format: f.input.format,
            compression: f.input.compression,
            dialect: f.dialect.as_ref().map(|d| (d.rules, d.header, d.trailing)),
            columns: f
                .schema
                .fields()
                .iter()
                .map(|fl| (fl.name().clone(), typed.then(|| fl.data_type().clone())))
                .collect(),
        }
    }
}

/// Resolves every input, local or remote, in order and without duplicates.
async fn resolve_all(
    ctx: &SessionContext,
    options: &ReadOptions,
    tolerate: bool,
) -> Result<(Vec<InputFile>, Vec<String>, Vec<String>)> {
    let (mut files, mut skipped, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    for input in &options.paths {
        let (f, s, m) = if remote::is_remote(input) {
            let (url, store) = remote::ensure_store(ctx, input, &options.storage, None)?;
            remote::resolve_remote(
                input,
                &url,
                &store,
                options.format,
                tolerate,
                options.allow_empty,
            )
            .await?
        } else {
            // A directory walk: on a blocking thread.
            let (input, format) = (input.clone(), options.format);
            let (allow_empty, follow) = (options.allow_empty, options.follow_symlinks);
            crate::error::blocking(move || {
                resolve::resolve_inputs_tolerant(
                    std::slice::from_ref(&input),
                    format,
                    tolerate,
                    allow_empty,
                    follow,
                )
            })
            .await?
        };
        for file in f {
            let id = (file.store.clone(), file.path.clone());
            if seen.insert(id) {
                files.push(file);
            }
        }
        skipped.extend(s);
        missing.extend(m);
    }
    if files.is_empty() && !options.allow_empty && missing.is_empty() {
        return Err(Error::NoMatch(options.paths.join(" ")));
    }
    Ok((files, skipped, missing))
}

/// The merged schema, with the explicit schema's types applied.
fn target_schema(
    files: &[SourceFile],
    options: &ReadOptions,
    explicit: Option<&Schema>,
) -> Result<(SchemaRef, Vec<String>, Vec<String>)> {
    let mut required = Vec::new();
    let (mut fields, decisions): (Vec<Field>, Vec<String>) = if options.union_by_name {
        let inputs: Vec<FileSchema<'_>> = files
            .iter()
            .map(|f| FileSchema {
                file: &f.input.display,
                format: f.input.format,
                schema: &f.schema,
            })
            .collect();
        let merged = merge_schemas(&inputs)?;
        (
            merged
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect(),
            merged.decisions,
        )
    } else {
        by_position(files)?
    };
    if let Some(explicit) = explicit {
        for ef in explicit.fields() {
            if !ef.is_nullable() {
                required.push(ef.name().clone());
            }
            match fields.iter_mut().find(|f| f.name() == ef.name()) {
                Some(f) => *f = Field::new(ef.name(), ef.data_type().clone(), true),
                None => fields.push(Field::new(ef.name(), ef.data_type().clone(), true)),
            }
        }
    }
    Ok((Arc::new(Schema::new(fields)), decisions, required))
}

/// CSV files without a header take their column names from the explicit schema, by
/// position (as Spark's and DuckDB's readers do): without this, a headerless file's
/// columns are `column_1`, `column_2`... and the schema's columns would come out all NULL
/// beside them. Done when the schema names as many columns as the file has, or for every
/// headerless file when the header is declared absent (`--no-header`): then the first
/// columns are named and a file wider or narrower than the schema is said in a line of
/// the returned decisions.
fn name_headerless(files: &mut [SourceFile], explicit: &Schema, declared: bool) -> Vec<String> {
    let mut said = Vec::new();
    for f in files.iter_mut() {
        let headerless =
            f.input.format == Format::Csv && f.dialect.as_ref().is_some_and(|d| !d.header);
        let (have, named) = (f.schema.fields().len(), explicit.fields().len());
        if !headerless || (have != named && !declared) {
            continue;
        }
        let fields: Vec<Field> = f
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, own)| match explicit.fields().get(i) {
                Some(e) => Field::new(e.name(), own.data_type().clone(), own.is_nullable()),
                None => own.as_ref().clone(),
            })
            .collect();
        f.schema = Arc::new(Schema::new(fields));
        if have != named {
            said.push(format!(
                "{}: no header, {have} columns named by position from a schema of {named}",
                f.input.display
            ));
        }
    }
    said
}

/// True when `column` comes from a `key=value` folder of the file's path.
fn is_hive_key(input: &InputFile, column: &str) -> bool {
    input.partitions.iter().any(|(k, _)| k == column)
}

/// Position-aligned schema (union by name off): names from the first file, types widened.
fn by_position(files: &[SourceFile]) -> Result<(Vec<Field>, Vec<String>)> {
    let first = &files[0];
    let mut fields: Vec<Field> = first
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut decisions = Vec::new();
    for f in &files[1..] {
        if f.schema.fields().len() != fields.len() {
            return Err(Error::file(
                &f.input.display,
                format!(
                    "has {} columns but {} has {} (union by position needs equal counts; turn on --union-by-name)",
                    f.schema.fields().len(),
                    first.input.display,
                    fields.len()
                ),
            ));
        }
        for (target, own) in fields.iter_mut().zip(f.schema.fields()) {
            if target.data_type() == own.data_type() {
                continue;
            }
            let text = first.input.format.is_text() && f.input.format.is_text();
            let w = merge::widen(target.data_type(), own.data_type(), text).ok_or_else(|| {
                Error::SchemaConflict {
                    column: target.name().clone(),
                    left_file: first.input.display.clone(),
                    left_type: type_name(target.data_type()),
                    right_file: f.input.display.clone(),
                    right_type: type_name(own.data_type()),
                }
            })?;
            if w != *target.data_type() {
                decisions.push(format!(
                    "column '{}': {} -> {} (from {})",
                    target.name(),
                    type_name(target.data_type()),
                    type_name(&w),
                    f.input.display
                ));
                *target = Field::new(target.name(), w, true);
            }
        }
    }
    for f in fields.iter_mut() {
        if f.data_type() == &DataType::Null {
            *f = Field::new(f.name(), DataType::Utf8, true);
        }
    }
    Ok((fields, decisions))
}

/// Parses an explicit schema (`id BIGINT, ts TIMESTAMP`) in DataFusion's SQL dialect, or the
/// same text read from a file when `spec` names an existing file.
pub async fn parse_schema(ctx: &SessionContext, spec: &str) -> Result<Schema> {
    let text = if std::path::Path::new(spec).is_file() {
        std::fs::read_to_string(spec).map_err(|e| Error::io(spec, e))?
    } else if !spec.trim().contains(char::is_whitespace) && spec.contains(['/', '.']) {
        // One word with a dot or slash: a schema file that is not there.
        return Err(Error::Config(format!(
            "--schema '{spec}': no such file (give `name TYPE, ...` or a file holding that)"
        )));
    } else {
        spec.to_string()
    };
    let sql = format!(
        "CREATE TABLE __sluice_schema ({})",
        text.trim().trim_end_matches(',')
    );
    let plan = ctx.state().create_logical_plan(&sql).await.map_err(|e| {
        Error::Config(format!(
            "--schema '{}': {}",
            text.trim(),
            infer::clean_engine_error(&e)
        ))
    })?;
    let schema = plan.schema().as_arrow().clone();
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = schema.fields().iter().find(|f| !seen.insert(f.name())) {
        return Err(Error::Config(format!(
            "--schema lists column '{}' twice",
            dup.name()
        )));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let dt = match f.data_type() {
                DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
                    DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
                }
                other => other.clone(),
            };
            Field::new(f.name(), dt, f.is_nullable())
        })
        .collect();
    Ok(Schema::new(fields))
}
