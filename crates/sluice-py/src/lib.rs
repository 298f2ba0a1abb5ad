//! `sluice._sluice`: the Python bindings of the sluice engine.
//!
//! The Python package (`python/sluice`) is a thin layer over this module: every read, query
//! and pipeline runs in the Rust engine, on its own threads, with the GIL released while it
//! runs. Arrow data crosses to Python through the Arrow C data and C stream interfaces
//! (`arrow-pyarrow`): no rows are copied or pickled.

mod convert;
mod errors;
mod pipeline;
mod relation;
mod runtime;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
mod _sluice {
    #[pymodule_export]
    use crate::errors::{
        ApiError, ConfigError, FunctionError, InputError, SchemaError, SluiceError, SqlError,
        UnreadRowsWarning,
    };
    #[pymodule_export]
    use crate::pipeline::{run_file, run_steps, run_toml};
    #[pymodule_export]
    use crate::relation::{scan, Relation};

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
