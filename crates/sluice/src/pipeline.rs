//! The pipeline file (`sluice run PIPELINE.toml`): a `[source]`, optional `[[transform]]`
//! steps and a `[sink]`, with keys named like the CLI flags. Unknown keys are errors that name
//! the key and its line. Relative paths are resolved against the pipeline file's folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::enrich::EnrichSpec;
use crate::error::{Error, Result};
use crate::job::{Job, Stage, Transform};
use crate::lookup::LookupSpec;
use crate::sink::{SinkOptions, WriteMode};
use crate::source::{CsvOptions, Format, NewlinesInValues, ReadOptions};
use crate::storage::format::parse_char_option;

pub use crate::config::OneOrMany;

/// `[source]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Files, folders and globs.
    pub paths: OneOrMany,
    /// `csv`, `ndjson`, `parquet` or `orc` (default: from each file's extension).
    pub format: Option<String>,
    /// CSV files have a header line (default: detected per file).
    pub header: Option<bool>,
    /// CSV lines before the header (default: detected per file).
    pub skip_rows: Option<usize>,
    /// Detect each CSV file's dialect where it is not given (default true).
    pub detect_dialect: Option<bool>,
    /// CSV delimiter.
    pub delimiter: Option<String>,
    /// CSV quote character.
    pub quote: Option<String>,
    /// CSV escape character.
    pub escape: Option<String>,
    /// CSV comment prefix.
    pub comment: Option<String>,
    /// A string read as NULL.
    pub null_value: Option<String>,
    /// `auto`, `true` or `false`.
    pub newlines_in_values: Option<toml::Value>,
    /// Explicit column types (`id BIGINT, ts TIMESTAMP`) or a file holding them.
    pub schema: Option<String>,
    /// Align columns by name (default true).
    pub union_by_name: Option<bool>,
    /// Name of a column holding each row's source file.
    pub file_column: Option<String>,
    /// Rows sampled per file for inference.
    pub infer_rows: Option<usize>,
    /// Read `key=value` folders as columns (default true).
    pub hive_partitioning: Option<bool>,
    /// `fail`, `skip` or `reject` (default) for rows that cannot be read.
    pub on_error: Option<String>,
    /// Files at least this many bytes are split into ranges.
    pub split_min_size: Option<usize>,
    /// Succeed with no rows when the inputs match nothing (default false).
    pub allow_empty: Option<bool>,
    /// Write the rest when input files cannot be read (default false: the job fails).
    pub allow_failed_files: Option<bool>,
    /// Follow symbolic links out of listed folders (default false).
    pub follow_symlinks: Option<bool>,
    /// Longest record in bytes (default 64 MiB).
    pub max_record_bytes: Option<u64>,
    /// Most bytes out per compressed byte (default 100, 0: no limit).
    pub max_compression_ratio: Option<u64>,
    /// A database input's table (`SCHEMA.NAME`).
    pub table: Option<String>,
    /// A database input's query, instead of a table.
    pub query: Option<String>,
    /// An integer, date or timestamp column cutting a database read into partitions.
    pub partition_column: Option<String>,
    /// Partitions of a database read (default: threads).
    pub partitions: Option<usize>,
    /// Where a database read's first cut starts (default: the column's minimum).
    pub lower_bound: Option<toml::Value>,
    /// Where a database read's last cut ends (default: the column's maximum).
    pub upper_bound: Option<toml::Value>,
}

/// `[[transform]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSpec {
    /// Optional name, usable as a table in later steps.
    pub name: Option<String>,
    /// The SQL statement; `source` is the previous stage's output.
    pub sql: String,
}

/// `[sink]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// Output folder or file.
    pub path: String,
    /// `parquet`, `csv` or `ndjson`.
    pub format: Option<String>,
    /// Number of output files.
    pub files: Option<usize>,
    /// Hive partition columns.
    pub partition_by: Option<OneOrMany>,
    /// `error`, `overwrite` or `append`.
    pub mode: Option<String>,
    /// Parquet codec.
    pub compression: Option<String>,
    /// Where rejected rows go (an NDJSON file) instead of `path/_rejects/`.
    pub rejects: Option<String>,
    /// `ndjson` (default) or `parquet`.
    pub rejects_format: Option<String>,
    /// Prefix spreadsheet formulas in CSV text cells with `'`.
    pub csv_safe: Option<bool>,
    /// A database output's table (`SCHEMA.NAME`).
    pub table: Option<String>,
    /// A database output: insert or update by these key columns.
    pub upsert: Option<OneOrMany>,
    /// A database output: create the table when missing (default true).
    pub create: Option<bool>,
}

/// `[settings]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsSpec {
    /// Threads to use (default: number of cores).
    pub threads: Option<usize>,
}

/// `[cluster]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// The scheduler: `df://HOST:PORT`.
    pub url: String,
}

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// What to read.
    pub source: SourceSpec,
    /// SQL steps.
    #[serde(default)]
    pub transform: Vec<toml::Spanned<TransformSpec>>,
    /// HTTP enrich stages.
    #[serde(default)]
    pub enrich: Vec<toml::Spanned<EnrichSpec>>,
    /// Broadcast lookups.
    #[serde(default)]
    pub lookup: Vec<toml::Spanned<LookupSpec>>,
    /// Where to write.
    pub sink: SinkSpec,
    /// Run on a cluster instead of here.
    #[serde(default)]
    pub cluster: Option<ClusterSpec>,
    /// Run settings.
    #[serde(default)]
    pub settings: SettingsSpec,
    /// Options of remote object stores: endpoint, region, credentials, `allow_http`,
    /// `skip_signature` (anonymous)... (the `--storage-option` keys).
    #[serde(default)]
    pub storage: crate::storage::stores::StorageOptions,
}

/// Reads and validates a pipeline file into a [`Job`].
pub fn load(path: &Path) -> Result<Job> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    parse(&text, path)
}

/// Parses pipeline text; `path` names the file in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Job> {
    let fail = |reason: String| Error::Pipeline {
        path: path.to_path_buf(),
        reason,
    };
    let spec: PipelineSpec = toml::from_str(text).map_err(|e| {
        let start = e.span().map(|s| s.start.min(text.len()));
        let line = error_line(text, e.message(), start)
            .map(|l| format!("line {l}: "))
            .unwrap_or_default();
        fail(format!("{line}{}", e.message().trim()))
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    spec.into_job(&base).map_err(|e| match e {
        Error::Config(reason) => fail(reason),
        other => other,
    })
}

/// The 1-based line an error is about. For an unknown key, toml's span covers the whole
/// table, so the key itself is looked up from there on.
fn error_line(text: &str, message: &str, start: Option<usize>) -> Option<usize> {
    let start = start?;
    let line_of = |offset: usize| {
        text.as_bytes()[..offset]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    };
    let key = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key);
    if let Some(key) = key {
        let mut offset = start;
        for line in text[start..].split_inclusive('\n') {
            let trimmed = line.trim_start();
            if let Some(after) = trimmed.strip_prefix(key) {
                if after.trim_start().starts_with('=') {
                    return Some(line_of(offset));
                }
            }
            offset += line.len();
        }
    }
    Some(line_of(start))
}

fn char_opt(name: &str, v: &Option<String>) -> Result<Option<u8>> {
    v.as_deref().map(|s| parse_char_option(name, s)).transpose()
}

/// Joins a relative path onto the pipeline's folder; absolute paths stay as they are.
fn anchor(base: &Path, p: &str) -> String {
    if Path::new(p).is_absolute()
        || base.as_os_str().is_empty()
        || crate::storage::stores::is_remote(p)
        || crate::db::is_database(p)
    {
        p.to_string()
    } else {
        let joined: PathBuf = base.join(p);
        joined.display().to_string()
    }
}

/// A bound as text: `1000`, `"2024-01-01"` or a TOML date all read as the column's type.
fn bound_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl SourceSpec {
    /// The read options these keys describe; relative paths are joined onto `base` (the
    /// pipeline file's folder; empty: the working directory).
    pub fn into_read_options(
        self,
        base: &Path,
        storage: &crate::storage::stores::StorageOptions,
    ) -> Result<ReadOptions> {
        let s = self;
        let newlines = match &s.newlines_in_values {
            None => NewlinesInValues::Auto,
            Some(toml::Value::Boolean(true)) => NewlinesInValues::Yes,
            Some(toml::Value::Boolean(false)) => NewlinesInValues::No,
            Some(toml::Value::String(v)) => v.parse()?,
            Some(other) => {
                return Err(Error::Config(format!(
                    "newlines_in_values must be auto, true or false, not {other}"
                )))
            }
        };
        let csv = CsvOptions {
            header: s.header,
            delimiter: char_opt("delimiter", &s.delimiter)?,
            quote: char_opt("quote", &s.quote)?,
            escape: char_opt("escape", &s.escape)?,
            comment: char_opt("comment", &s.comment)?,
            skip_rows: s.skip_rows,
            detect: s.detect_dialect.unwrap_or(true),
            null_value: s.null_value,
            newlines_in_values: newlines,
        };
        let paths: Vec<String> = s.paths.into_vec().iter().map(|p| anchor(base, p)).collect();
        if paths.is_empty() {
            return Err(Error::Config("[source] paths is empty".into()));
        }
        let schema = s.schema.map(|spec| {
            let anchored = anchor(base, &spec);
            if Path::new(&anchored).is_file() {
                anchored
            } else {
                spec
            }
        });
        Ok(ReadOptions {
            paths,
            format: s.format.as_deref().map(str::parse::<Format>).transpose()?,
            csv,
            union_by_name: s.union_by_name.unwrap_or(true),
            schema,
            file_column: s.file_column,
            infer_rows: s.infer_rows.unwrap_or(1000),
            hive_partitioning: s.hive_partitioning.unwrap_or(true),
            on_error: s
                .on_error
                .as_deref()
                .map(str::parse)
                .transpose()?
                .unwrap_or_default(),
            split_min_size: s.split_min_size,
            allow_empty: s.allow_empty.unwrap_or(false),
            allow_failed_files: s.allow_failed_files.unwrap_or(false),
            follow_symlinks: s.follow_symlinks.unwrap_or(false),
            max_record_bytes: s
                .max_record_bytes
                .unwrap_or(crate::source::DEFAULT_MAX_RECORD_BYTES),
            max_compression_ratio: s
                .max_compression_ratio
                .unwrap_or(crate::source::DEFAULT_MAX_COMPRESSION_RATIO),
            storage: storage.clone(),
            database: crate::db::DbOptions {
                table: s.table,
                query: s.query,
                partition_column: s.partition_column,
                partitions: s.partitions,
                lower_bound: s.lower_bound.as_ref().map(bound_text),
                upper_bound: s.upper_bound.as_ref().map(bound_text),
            },
        })
    }
}

impl SinkSpec {
    /// The sink options these keys describe; relative paths are joined onto `base`.
    pub fn into_sink_options(
        self,
        base: &Path,
        storage: &crate::storage::stores::StorageOptions,
    ) -> Result<SinkOptions> {
        let k = self;
        Ok(SinkOptions {
            path: anchor(base, &k.path),
            format: k.format.as_deref().map(str::parse::<Format>).transpose()?,
            files: k.files,
            partition_by: k.partition_by.map(OneOrMany::into_vec).unwrap_or_default(),
            mode: k
                .mode
                .as_deref()
                .map(str::parse::<WriteMode>)
                .transpose()?
                .unwrap_or_default(),
            compression: k.compression.as_deref().map(str::parse).transpose()?,
            rejects: k.rejects.as_deref().map(|r| anchor(base, r)),
            storage: storage.clone(),
            rejects_format: k
                .rejects_format
                .as_deref()
                .map(str::parse::<Format>)
                .transpose()?,
            csv_safe: k.csv_safe.unwrap_or(false),
            table: k.table,
            upsert: k.upsert.map(OneOrMany::into_vec).unwrap_or_default(),
            create: k.create,
        })
    }
}

impl PipelineSpec {
    fn into_job(self, base: &Path) -> Result<Job> {
        let source = self.source.into_read_options(base, &self.storage)?;
        let sink = self.sink.into_sink_options(base, &self.storage)?;
        // Stages run in the order they appear in the file, whatever their kind.
        let mut stages: Vec<(usize, Stage)> = Vec::new();
        for t in self.transform {
            let at = t.span().start;
            let t = t.into_inner();
            stages.push((
                at,
                Stage::Sql(Transform {
                    name: t.name,
                    sql: t.sql,
                }),
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut unique = |name: &str| {
            if names.insert(name.to_string()) {
                Ok(())
            } else {
                Err(Error::Config(format!("two stages are named '{name}'")))
            }
        };
        for e in self.enrich {
            let at = e.span().start;
            let mut e = e.into_inner();
            unique(&e.name)?;
            e.cache = e.cache.as_deref().map(|c| anchor(base, c));
            e.storage = self.storage.clone();
            stages.push((at, Stage::Enrich(Box::new(e))));
        }
        for l in self.lookup {
            let at = l.span().start;
            let mut l = l.into_inner();
            unique(&l.name)?;
            l.paths = l.paths.iter().map(|p| anchor(base, p)).collect();
            l.storage = self.storage.clone();
            stages.push((at, Stage::Lookup(Box::new(l))));
        }
        for (_, s) in &stages {
            if let Stage::Sql(Transform { name: Some(n), .. }) = s {
                unique(n)?;
            }
        }
        stages.sort_by_key(|(at, _)| *at);
        Ok(Job {
            source,
            stages: stages.into_iter().map(|(_, s)| s).collect(),
            sink,
            threads: self
                .settings
                .threads
                .unwrap_or_else(crate::context::default_threads),
            cluster: self.cluster.as_ref().map(|c| c.url.parse()).transpose()?,
            ..Job::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "[source]\npaths = [\"a.csv\"]\nbogus = 1\n\n[sink]\npath = \"out\"\n";
        let err = parse(text, Path::new("p.toml")).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn relative_paths_are_anchored() {
        let text = "[source]\npaths = \"data/*.csv\"\n[sink]\npath = \"out\"\nmode = \"overwrite\"\n[[transform]]\nsql = \"SELECT 1\"\n";
        let job = parse(text, Path::new("dir/p.toml")).expect("parse");
        assert_eq!(job.source.paths, vec!["dir/data/*.csv".to_string()]);
        assert_eq!(job.sink.path, "dir/out");
        assert_eq!(job.sink.mode, WriteMode::Overwrite);
        assert_eq!(job.stages.len(), 1);
        // URLs are not relative paths.
        let text = "[source]\npaths = \"s3://b/in/*.csv\"\n[sink]\npath = \"s3://b/out\"\n";
        let job = parse(text, Path::new("dir/p.toml")).expect("parse");
        assert_eq!(job.source.paths, vec!["s3://b/in/*.csv".to_string()]);
        assert_eq!(job.sink.path, "s3://b/out");
    }

    #[test]
    fn bad_values_are_errors() {
        let text = "[source]\npaths = \"a.csv\"\ndelimiter = \"ab\"\n[sink]\npath = \"o\"\n";
        assert!(parse(text, Path::new("p.toml")).is_err());
        let text = "[source]\npaths = \"a.csv\"\n[sink]\npath = \"o\"\nmode = \"replace\"\n";
        let msg = parse(text, Path::new("p.toml"))
            .expect_err("mode")
            .to_string();
        assert!(msg.contains("mode"), "{msg}");
    }
}
