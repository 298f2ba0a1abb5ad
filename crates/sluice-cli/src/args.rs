//! Command-line flags shared by several subcommands.

use std::path::PathBuf;

use clap::Args;
use sluice::sink::ParquetCompression;
use sluice::source::format::parse_char_option;
use sluice::source::{CsvOptions, Format, NewlinesInValues, OnError};
use sluice::{ReadOptions, SinkOptions, WriteMode};

/// How to read inputs.
#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    /// Format of every input (default: from each file's extension).
    #[arg(long = "format-in", value_name = "FORMAT", value_parser = parse_format)]
    pub format_in: Option<Format>,
    /// CSV files have no header line (columns are named column_1, column_2, ...); by
    /// default each file's first row is told from data by its types.
    #[arg(long, conflicts_with = "header")]
    pub no_header: bool,
    /// CSV files have a header line (turns header detection off).
    #[arg(long)]
    pub header: bool,
    /// CSV field delimiter (`\t` or `tab` for tab); by default detected per file (`,` `;`
    /// tab `|` `:`), ties going to `,` (tab for .tsv).
    #[arg(long, value_name = "CHAR", value_parser = char_parser("delimiter"))]
    pub delimiter: Option<u8>,
    /// CSV quote character (by default `"`, or `'` where a file quotes with it).
    #[arg(long, value_name = "CHAR", value_parser = char_parser("quote"))]
    pub quote: Option<u8>,
    /// CSV escape character inside quotes (by default a doubled quote, or `\` where a file
    /// escapes with it).
    #[arg(long, value_name = "CHAR", value_parser = char_parser("escape"))]
    pub escape: Option<u8>,
    /// Skip CSV lines starting with this character (by default `#` where a file has such
    /// lines that are no rows).
    #[arg(long, value_name = "CHAR", value_parser = char_parser("comment"))]
    pub comment: Option<u8>,
    /// CSV lines before the header to skip (by default the title or note lines a file
    /// starts with, detected).
    #[arg(long, value_name = "N")]
    pub skip_rows: Option<usize>,
    /// Detect nothing: every CSV file is `,`-delimited (tab for .tsv), `"`-quoted, with a
    /// header, unless the flags above say otherwise.
    #[arg(long)]
    pub no_detect: bool,
    /// A string to read as NULL (the empty field always is).
    #[arg(long, value_name = "STRING")]
    pub null_value: Option<String>,
    /// Whether quoted CSV values may hold line breaks: auto scans big files before splitting.
    #[arg(long, value_name = "auto|true|false", default_value = "auto", value_parser = parse_newlines)]
    pub newlines_in_values: NewlinesInValues,
    /// Column types, e.g. 'id BIGINT, ts TIMESTAMP', or a file holding them.
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Option<String>,
    /// Align columns by name across files (true) or by position (false).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub union_by_name: bool,
    /// Add a column with this name holding each row's source file.
    #[arg(long, value_name = "NAME")]
    pub file_column: Option<String>,
    /// Rows sampled from every file to infer its types.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = parse_positive)]
    pub infer_rows: usize,
    /// Rows that cannot be read: fail (stop), skip (drop and count), reject (write them to
    /// OUT/_rejects/ with file, line and reason).
    #[arg(long, value_name = "fail|skip|reject", default_value = "reject", value_parser = parse_on_error)]
    pub on_error: OnError,
    /// Files at least this many bytes are split into byte ranges read in parallel.
    #[arg(long, value_name = "BYTES")]
    pub split_min_size: Option<usize>,
    /// Read key=value folder names below input folders as columns.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub hive_partitioning: bool,
    /// Succeed with no rows when the inputs match no file (a glob matching nothing is an
    /// error otherwise).
    #[arg(long)]
    pub allow_empty: bool,
    /// Write what could be read when input files fail (missing, corrupt, cut off): without
    /// it such a job writes nothing and exits 1, naming the files.
    #[arg(long)]
    pub allow_failed_files: bool,
    /// Follow symbolic links that lead out of a listed folder or glob root (by default
    /// they are skipped and named in the summary).
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Longest CSV record or NDJSON line in bytes; a longer one is a rejected row
    /// (record_too_large), never held in memory whole.
    #[arg(long, value_name = "BYTES", default_value_t = sluice::source::DEFAULT_MAX_RECORD_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_record_bytes: u64,
    /// Most bytes a compressed input may decompress to per compressed byte, checked past
    /// 64 MiB of output: a file beyond it fails (a decompression bomb). 0: no limit.
    #[arg(long, value_name = "RATIO", default_value_t = sluice::source::DEFAULT_MAX_COMPRESSION_RATIO)]
    pub max_compression_ratio: u64,
    /// An option of remote object stores, KEY=VALUE (repeatable): endpoint, region,
    /// allow_http, skip_signature, virtual_hosted_style_request, access keys...
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub storage_options: Vec<(String, String)>,
}

impl ReadArgs {
    /// The library's read options for these flags and inputs.
    pub fn to_options(&self, paths: Vec<String>) -> ReadOptions {
        ReadOptions {
            paths,
            format: self.format_in,
            csv: CsvOptions {
                header: match (self.header, self.no_header) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                delimiter: self.delimiter,
                quote: self.quote,
                escape: self.escape,
                comment: self.comment,
                skip_rows: self.skip_rows,
                detect: !self.no_detect,
                null_value: self.null_value.clone(),
                newlines_in_values: self.newlines_in_values,
            },
            union_by_name: self.union_by_name,
            schema: self.schema.clone(),
            file_column: self.file_column.clone(),
            infer_rows: self.infer_rows,
            hive_partitioning: self.hive_partitioning,
            on_error: self.on_error,
            split_min_size: self.split_min_size,
            allow_empty: self.allow_empty,
            allow_failed_files: self.allow_failed_files,
            follow_symlinks: self.follow_symlinks,
            max_record_bytes: self.max_record_bytes,
            max_compression_ratio: self.max_compression_ratio,
            storage: self.storage_options.iter().cloned().collect(),
            database: sluice::db::DbOptions::default(),
        }
    }
}

/// What a `postgres://` input reads (`ingest`, `schema`).
#[derive(Debug, Clone, Default, Args)]
pub struct DbArgs {
    /// The table a postgres:// input reads (SCHEMA.NAME; double quotes keep a name's case).
    #[arg(long, value_name = "SCHEMA.NAME")]
    pub table: Option<String>,
    /// The query a postgres:// input reads, instead of a table.
    #[arg(long = "query", value_name = "SQL", conflicts_with = "table")]
    pub db_query: Option<String>,
    /// An integer, date or timestamp column that cuts a database read into partitions,
    /// each read on its own connection from the same snapshot.
    #[arg(long, value_name = "COLUMN")]
    pub partition_column: Option<String>,
    /// Partitions of a database read (default: --threads).
    #[arg(long, value_name = "N", requires = "partition_column", value_parser = clap::value_parser!(u64).range(1..))]
    pub partitions: Option<u64>,
    /// Where the first cut of the partition column starts (default: its smallest value;
    /// smaller values are still read).
    #[arg(long, value_name = "VALUE", requires = "partition_column")]
    pub lower_bound: Option<String>,
    /// Where the last cut of the partition column ends (default: its largest value; larger
    /// values are still read).
    #[arg(long, value_name = "VALUE", requires = "partition_column")]
    pub upper_bound: Option<String>,
}

impl DbArgs {
    /// The library's database options for these flags.
    pub fn to_options(&self) -> sluice::db::DbOptions {
        sluice::db::DbOptions {
            table: self.table.clone(),
            query: self.db_query.clone(),
            partition_column: self.partition_column.clone(),
            partitions: self.partitions.map(|n| n as usize),
            lower_bound: self.lower_bound.clone(),
            upper_bound: self.upper_bound.clone(),
        }
    }
}

/// How to write the output.
#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// Output folder, or a single file when it ends in .parquet/.csv/.ndjson.
    #[arg(long = "to", value_name = "PATH")]
    pub to: String,
    /// Output format (default: from the output's extension, else parquet).
    #[arg(long = "format-out", value_name = "FORMAT", value_parser = parse_format)]
    pub format_out: Option<Format>,
    /// Number of output files (per folder with --partition-by). Default: one per thread,
    /// or one per partition folder.
    #[arg(long, value_name = "N")]
    pub files: Option<usize>,
    /// Write Hive-style col=value/ folders for these columns (comma-separated).
    #[arg(long, value_name = "COLS", value_delimiter = ',')]
    pub partition_by: Vec<String>,
    /// What to do if the output exists.
    #[arg(long, value_name = "error|overwrite|append", default_value = "error", value_parser = parse_mode)]
    pub mode: WriteMode,
    /// Parquet compression: zstd, snappy, gzip, lz4 or none.
    #[arg(long, value_name = "CODEC", value_parser = parse_compression)]
    pub compression: Option<ParquetCompression>,
    /// Write rejected rows to this file instead of OUT/_rejects/.
    #[arg(long, value_name = "PATH")]
    pub rejects: Option<String>,
    /// Format of the rejected rows: ndjson (default) or parquet (default when --rejects
    /// ends in .parquet).
    #[arg(long, value_name = "ndjson|parquet", value_parser = parse_format)]
    pub rejects_format: Option<Format>,
    /// CSV output bound for spreadsheets: text cells starting with =, +, -, @, tab or CR
    /// get a leading ' (formula injection).
    #[arg(long)]
    pub csv_safe: bool,
    /// The table a postgres:// output is written to (default: --table when the input is
    /// not a database).
    #[arg(long, value_name = "SCHEMA.NAME")]
    pub to_table: Option<String>,
    /// A database output: insert or update rows by these key columns (comma-separated).
    #[arg(long, value_name = "KEYS", value_delimiter = ',')]
    pub upsert: Vec<String>,
    /// A database output: do not create the table when it is missing.
    #[arg(long)]
    pub no_create: bool,
}

impl WriteArgs {
    /// The library's sink options for these flags.
    pub fn to_options(&self) -> SinkOptions {
        SinkOptions {
            path: self.to.clone(),
            format: self.format_out,
            files: self.files,
            partition_by: self.partition_by.clone(),
            mode: self.mode,
            compression: self.compression,
            rejects: self.rejects.clone(),
            rejects_format: self.rejects_format,
            csv_safe: self.csv_safe,
            table: self.to_table.clone(),
            upsert: self.upsert.clone(),
            create: Some(!self.no_create),
            ..SinkOptions::default()
        }
    }
}

/// Flags for commands that run a job.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Worker threads (default: number of cores).
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub threads: Option<usize>,
    /// Write a machine-readable report here.
    #[arg(long, value_name = "PATH")]
    pub report_json: Option<PathBuf>,
    /// Show progress even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Print no summary at the end.
    #[arg(long, short)]
    pub quiet: bool,
    /// Run the job on a sluice cluster (`sluice cluster scheduler`): df://HOST:PORT
    /// (overrides the pipeline's `[cluster] url`). Inputs, lookups and the output must be
    /// at the same path on every executor (a shared folder).
    #[arg(long, value_name = "df://HOST:PORT")]
    pub cluster: Option<sluice::cluster::SchedulerUrl>,
}

/// `KEY=VALUE`.
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

/// A whole number of at least 1.
pub fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse().map_err(|e: sluice::Error| e.to_string())
}

fn parse_mode(s: &str) -> Result<WriteMode, String> {
    s.parse().map_err(|e: sluice::Error| e.to_string())
}

fn parse_newlines(s: &str) -> Result<NewlinesInValues, String> {
    s.parse().map_err(|e: sluice::Error| e.to_string())
}

fn parse_on_error(s: &str) -> Result<OnError, String> {
    s.parse().map_err(|e: sluice::Error| e.to_string())
}

fn parse_compression(s: &str) -> Result<ParquetCompression, String> {
    s.parse().map_err(|e: sluice::Error| e.to_string())
}

fn char_parser(name: &'static str) -> impl Fn(&str) -> Result<u8, String> + Clone {
    move |s| parse_char_option(name, s).map_err(|e| e.to_string())
}
