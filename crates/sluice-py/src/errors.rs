//! sluice's errors as Python exceptions: `SluiceError` and one subclass per kind of
//! failure, each with the same one-line message the CLI prints.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;
use sluice::datafusion::error::DataFusionError;
use sluice::Error;

create_exception!(
    sluice,
    SluiceError,
    PyException,
    "Base class of every error sluice raises."
);
create_exception!(
    sluice,
    InputError,
    SluiceError,
    "An input cannot be read: no file matches, a file is missing, corrupt or cut off, a bad \
     row stopped the job (on_error='fail'), a database or object store refused."
);
create_exception!(
    sluice,
    SchemaError,
    SluiceError,
    "The inputs' columns cannot be merged into one schema (give an explicit schema=)."
);
create_exception!(
    sluice,
    ConfigError,
    SluiceError,
    "An option, a pipeline file or an output is wrong (unknown key, bad value, output exists)."
);
create_exception!(
    sluice,
    SqlError,
    SluiceError,
    "A SQL statement cannot be planned: bad syntax, an unknown table or column."
);
create_exception!(
    sluice,
    ApiError,
    SluiceError,
    "An HTTP API call of an enrich stage failed and the stage stops the job (on_error='fail')."
);
create_exception!(
    sluice,
    FunctionError,
    SluiceError,
    "A Python function of a map_batches stage raised: the job stopped and committed nothing. \
     The function's own exception (with its traceback) is the __cause__."
);

/// The exception for a sluice error, with the CLI's one-line message.
pub fn to_py(e: Error) -> PyErr {
    let line = sluice::error::one_line(&e);
    match &e {
        Error::NoMatch(_)
        | Error::NotFound(_)
        | Error::BadGlob { .. }
        | Error::UnknownFormat(_)
        | Error::File { .. }
        | Error::BadRow(_)
        | Error::Unreachable(_)
        | Error::Database(_)
        | Error::FilesFailed { .. }
        | Error::Io { .. }
        | Error::Store(_) => InputError::new_err(line),
        Error::SchemaConflict { .. } => SchemaError::new_err(line),
        Error::Config(_) | Error::Pipeline { .. } | Error::OutputExists(_) => {
            ConfigError::new_err(line)
        }
        Error::Api(_) => ApiError::new_err(line),
        Error::Engine(df) => engine_to_py(df, line),
        _ => SluiceError::new_err(line),
    }
}

/// The exception for an engine error: SQL that cannot be planned, or one of sluice's own
/// errors carried through the engine.
pub fn engine_to_py(e: &DataFusionError, line: String) -> PyErr {
    match e.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => SqlError::new_err(line),
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(Error::Api(_)) => ApiError::new_err(line),
            Some(Error::BadRow(_) | Error::File { .. } | Error::Io { .. } | Error::NotFound(_)) => {
                InputError::new_err(line)
            }
            Some(Error::Config(_)) => ConfigError::new_err(line),
            _ => SluiceError::new_err(line),
        },
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => InputError::new_err(line),
        _ => SluiceError::new_err(line),
    }
}

create_exception!(
    sluice,
    UnreadRowsWarning,
    pyo3::exceptions::PyUserWarning,
    "Rows of the input are not in a result: rejected (kept in a rejects file the message \
     names), skipped (on_error='skip'), or in files that could not be read."
);
