//! Databases as sources: PostgreSQL, read in parallel partitions from one snapshot
//! ([`postgres`]).

pub mod postgres;

/// True when `input` names a database (`postgres://` or `postgresql://`) rather than files.
pub fn is_database(input: &str) -> bool {
    let lower = input.get(..13).unwrap_or(input).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// How to read a database source: the `[source]` keys `table`, `query`,
/// `partition_column`, `partitions`, `lower_bound` and `upper_bound`, or `ingest`'s flags
/// of the same names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbOptions {
    /// The table to read (`SCHEMA.NAME` or `NAME`; double quotes keep a name's case).
    pub table: Option<String>,
    /// The query to read, instead of a table.
    pub query: Option<String>,
    /// An integer, date or timestamp column whose range is cut into `partitions` reads.
    pub partition_column: Option<String>,
    /// How many reads run at once over `partition_column` (default: the job's threads).
    pub partitions: Option<usize>,
    /// Where the first cut starts (default: the column's smallest value); rows below it are
    /// still read, by the first partition.
    pub lower_bound: Option<String>,
    /// Where the last cut ends (default: the column's largest value); rows above it are
    /// still read, by the last partition.
    pub upper_bound: Option<String>,
}

impl DbOptions {
    /// True when any database option is set (they need a database input).
    pub fn is_set(&self) -> bool {
        *self != DbOptions::default()
    }
}
