//! The engine's error type.

use std::path::PathBuf;

/// Result alias used across the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a sluice job, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input path, directory or glob matched no file.
    #[error("no input files match '{0}'")]
    NoMatch(String),

    /// A cluster process could not start or serve (a port in use, a scheduler not found).
    #[error("cluster: {0}")]
    Cluster(String),

    /// An input path does not exist.
    #[error("input not found: {0}")]
    NotFound(String),

    /// A glob pattern could not be parsed.
    #[error("invalid glob '{pattern}': {reason}")]
    BadGlob {
        /// The pattern as the user wrote it.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The format of a file could not be told from its name.
    #[error("cannot tell the format of '{0}' from its extension: pass --format-in csv|ndjson|parquet|orc")]
    UnknownFormat(String),

    /// A file could not be read or parsed while looking at its schema.
    #[error("{file}: {reason}")]
    File {
        /// The file concerned.
        file: String,
        /// What went wrong.
        reason: String,
    },

    /// Two files disagree on a column type in a way that cannot be widened.
    #[error("column '{column}' is {left_type} in {left_file} but {right_type} in {right_file}: types cannot be merged (give an explicit --schema)")]
    SchemaConflict {
        /// The column name.
        column: String,
        /// One file.
        left_file: String,
        /// Its type there.
        left_type: String,
        /// The other file.
        right_file: String,
        /// Its type there.
        right_type: String,
    },

    /// The row ledger does not balance: rows were lost (or made up) somewhere between the
    /// read and the write. Nothing is committed.
    #[error("ledger: {0}")]
    Ledger(String),

    /// A bad row stopped the job (`--on-error fail`): file:line, offset, column, reason.
    #[error("{0}")]
    BadRow(String),

    /// An HTTP API call of an enrich stage failed and the stage stops the job
    /// (`on_error = "fail"`): the stage, the key and what the API answered.
    #[error("{0}")]
    Api(String),

    /// A cluster's executor does not see the job's inputs or outputs where the client does
    /// (see [`crate::cluster::reach`]): the executor, the path and what is wrong.
    #[error("{0}")]
    Unreachable(String),

    /// A database refused or broke off a read: the source (its URL without the password)
    /// and the server's message.
    #[error("{0}")]
    Database(String),

    /// Input files could not be read (missing, corrupt, cut off) and the job was not told
    /// to write the rest (`--allow-failed-files`): nothing was committed.
    #[error("{count} input file(s) could not be read, nothing was written: {list} (--allow-failed-files writes the rest)")]
    FilesFailed {
        /// How many files failed.
        count: usize,
        /// The first few, each with its reason.
        list: String,
    },

    /// An option value is invalid.
    #[error("invalid option: {0}")]
    Config(String),

    /// A pipeline file could not be read or parsed.
    #[error("{path}: {reason}")]
    Pipeline {
        /// The pipeline file.
        path: PathBuf,
        /// What is wrong (for parse errors, it names the line and the key).
        reason: String,
    },

    /// The output already exists and the mode does not allow touching it.
    #[error("output '{0}' already exists (use --mode overwrite or --mode append)")]
    OutputExists(String),

    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The path being accessed.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An error from the query engine (SQL, execution, reading data).
    #[error(transparent)]
    Engine(#[from] datafusion::error::DataFusionError),

    /// An error from object storage.
    #[error(transparent)]
    Store(#[from] datafusion::object_store::Error),

    /// An error from Arrow.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    /// An error writing Parquet.
    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A file-level error with a reason.
    pub fn file(file: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::File {
            file: file.into(),
            reason: reason.to_string(),
        }
    }

    /// The inverse of `DataFusionError::from(Error)`: sluice's own error back out of the
    /// engine's `External` wrapping; any other engine error as [`Error::Engine`].
    pub fn from_engine(e: datafusion::error::DataFusionError) -> Error {
        match e {
            datafusion::error::DataFusionError::External(inner) => {
                match inner.downcast::<Error>() {
                    Ok(own) => *own,
                    Err(other) => {
                        Error::Engine(datafusion::error::DataFusionError::External(other))
                    }
                }
            }
            other => Error::Engine(other),
        }
    }
}

impl From<Error> for datafusion::error::DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::Engine(e) => e,
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}

/// Runs `f` (file system work: fsync, renames, directory walks, user code) on a blocking
/// thread, so it never holds up the async runtime's workers.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Config(format!("a blocking task failed: {e}")))?
}

/// `e`'s message followed by each of its sources' that it does not already hold
/// (`error connecting to server: Connection refused (os error 111)`).
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = inner.source();
    }
    line
}

/// The column names of `schema`, comma-separated (for messages).
pub fn column_list(schema: &datafusion::arrow::datatypes::Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| !crate::ledger::origin::is_origin(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error and its causes as one line, the way sluice prints errors: causes whose text the
/// message already holds are left out (DataFusion errors repeat their sources), line breaks
/// are folded.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(text.trim()) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(text.trim());
        }
        cause = c.source();
    }
    out.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
