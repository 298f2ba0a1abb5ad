//! Python keyword arguments into the pipeline file's sections: the same keys, the same
//! checks and the same messages (an unknown key is an error naming it).

use std::path::Path;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::de::DeserializeOwned;
use sluice::pipeline::{SinkSpec, SourceSpec};
use sluice::source::ReadOptions;
use sluice::storage::stores::StorageOptions;
use sluice::SinkOptions;

use crate::errors::{to_py, ConfigError};

/// A Python value as a TOML value; `None` for Python's `None` (a key left out).
pub fn to_toml(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Option<toml::Value>> {
    if v.is_none() {
        return Ok(None);
    }
    // bool before int: True is an int in Python.
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Some(toml::Value::Boolean(b.is_true())));
    }
    if v.is_instance_of::<PyInt>() {
        let i: i64 = v.extract()?;
        return Ok(Some(toml::Value::Integer(i)));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(Some(toml::Value::Float(v.extract()?)));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Some(toml::Value::String(s.extract::<String>()?)));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        return Ok(Some(toml::Value::Table(table(d)?)));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for item in v.try_iter()? {
            if let Some(t) = to_toml(key, &item?)? {
                items.push(t);
            }
        }
        return Ok(Some(toml::Value::Array(items)));
    }
    // pathlib.Path and every other os.PathLike.
    if v.hasattr("__fspath__")? {
        let os = v.py().import("os")?;
        let s: String = os.call_method1("fspath", (v,))?.extract()?;
        return Ok(Some(toml::Value::String(s)));
    }
    Err(PyTypeError::new_err(format!(
        "{key}: a {} cannot be an option value (use str, int, float, bool, a path, a list or a dict)",
        v.get_type().name()?
    )))
}

/// A dict as a TOML table; keys whose value is `None` are left out.
pub fn table(d: &Bound<'_, PyDict>) -> PyResult<toml::Table> {
    let mut t = toml::Table::new();
    for (k, v) in d.iter() {
        let key: String = k
            .extract()
            .map_err(|_| PyTypeError::new_err("option names must be strings"))?;
        if let Some(value) = to_toml(&key, &v)? {
            t.insert(key, value);
        }
    }
    Ok(t)
}

/// Deserializes a section (`what` names it in errors) from a TOML table.
pub fn section<T: DeserializeOwned>(what: &str, t: toml::Table) -> PyResult<T> {
    T::deserialize(toml::Value::Table(t))
        .map_err(|e| ConfigError::new_err(format!("{what}: {}", e.to_string().trim())))
}

/// `storage_options=`: the object stores' keys (`endpoint`, `region`, credentials...).
pub fn storage(v: Option<&Bound<'_, PyAny>>) -> PyResult<StorageOptions> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(StorageOptions::default());
    };
    let d = v
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("storage_options must be a dict of str to str"))?;
    let mut out = StorageOptions::new();
    for (k, v) in d.iter() {
        let key: String = k.extract()?;
        let value = match to_toml(&key, &v)? {
            None => continue,
            Some(toml::Value::String(s)) => s,
            Some(other) => other.to_string(),
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// The `[source]` of a read: `paths` (one or many) and the other keys of the section.
pub fn read_options(
    paths: &Bound<'_, PyAny>,
    mut options: toml::Table,
    storage: &StorageOptions,
) -> PyResult<ReadOptions> {
    let paths = to_toml("paths", paths)?
        .ok_or_else(|| PyTypeError::new_err("paths must be a path or a list of paths"))?;
    options.insert("paths".into(), paths);
    let spec: SourceSpec = section("read", options)?;
    spec.into_read_options(Path::new(""), storage)
        .map_err(to_py)
}

/// The `[sink]` of a write: `path` and the other keys of the section.
pub fn sink_options(
    path: &Bound<'_, PyAny>,
    mut options: toml::Table,
    storage: &StorageOptions,
) -> PyResult<SinkOptions> {
    let path =
        to_toml("path", path)?.ok_or_else(|| PyTypeError::new_err("write: path must be a path"))?;
    options.insert("path".into(), path);
    let spec: SinkSpec = section("write", options)?;
    spec.into_sink_options(Path::new(""), storage)
        .map_err(to_py)
}
