//! `sluice.scan(...)`: a lazy relation over files (or a database), with SQL on top, that
//! hands its rows to Python as Arrow: a whole `pyarrow.Table`, a streaming
//! `pyarrow.RecordBatchReader`, or the Arrow C stream (`__arrow_c_stream__`) that Polars,
//! DuckDB and pyarrow take directly.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_pyarrow::{IntoPyArrow, ToPyArrow};
use futures::StreamExt;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict};
use sluice::datafusion::arrow::array::{RecordBatch, RecordBatchReader};
use sluice::datafusion::arrow::datatypes::SchemaRef;
use sluice::datafusion::arrow::error::ArrowError;
use sluice::datafusion::dataframe::DataFrame;
use sluice::datafusion::prelude::SessionContext;
use sluice::source::ReadOptions;
use sluice::Source;

use crate::convert;
use crate::errors::{to_py, SluiceError, UnreadRowsWarning};
use crate::runtime::{block_on, runtime};

/// One SQL step: the statement, and the names the relation before it is known by.
#[derive(Debug, Clone)]
struct Step {
    sql: String,
    names: Vec<String>,
}

/// What a relation is made of: how to read its input, then its SQL steps. Every execution
/// builds it afresh (the files are read again, rows are counted again), as a lazy frame does.
#[derive(Debug, Clone)]
struct Recipe {
    read: ReadOptions,
    steps: Vec<Step>,
    threads: usize,
    rejects: PathBuf,
}

/// A recipe built: the session, the plan and the source whose rows it counts.
struct Built {
    df: DataFrame,
    source: Arc<Source>,
    ctx: SessionContext,
}

impl Recipe {
    async fn build(self) -> sluice::Result<Built> {
        let ctx = sluice::context::session_with(self.threads, self.read.split_min_size);
        let source = Source::open(&ctx, self.read).await?;
        // Bad rows are never dropped without a trace: they go to a rejects file.
        source.rejects.set_dir(self.rejects.clone());
        let mut df = source.to_dataframe(&ctx)?;
        for step in self.steps {
            df = sql_step(&ctx, df, &step).await?;
        }
        Ok(Built {
            df,
            source: Arc::new(source),
            ctx,
        })
    }
}

async fn sql_step(ctx: &SessionContext, df: DataFrame, step: &Step) -> sluice::Result<DataFrame> {
    let view = df.into_view();
    for name in &step.names {
        ctx.deregister_table(name.as_str())?;
        ctx.register_table(name.as_str(), Arc::clone(&view))?;
    }
    Ok(ctx.sql(&step.sql).await?)
}

/// A lazy relation: files read with sluice's readers (every row accounted for), then SQL.
/// Nothing is read until the rows are asked for (`to_arrow`, `to_batches`,
/// `__arrow_c_stream__`); each of those reads the inputs again.
#[pyclass(module = "sluice._sluice", frozen)]
pub struct Relation {
    recipe: Recipe,
    schema: SchemaRef,
    /// The plan built when the relation was made (to check it and learn its schema), kept
    /// for its first execution.
    built: Mutex<Option<Built>>,
}

impl Relation {
    fn new(py: Python<'_>, recipe: Recipe) -> PyResult<Relation> {
        let built = block_on(py, recipe.clone().build())?.map_err(to_py)?;
        Ok(Relation {
            schema: Arc::new(built.df.schema().as_arrow().clone()),
            recipe,
            built: Mutex::new(Some(built)),
        })
    }

    /// The plan for one execution: the one built with the relation, or a fresh one.
    fn take_built(&self, py: Python<'_>) -> PyResult<Built> {
        let kept = self.built.lock().ok().and_then(|mut b| b.take());
        match kept {
            Some(b) => Ok(b),
            None => block_on(py, self.recipe.clone().build())?.map_err(to_py),
        }
    }

    /// A streaming reader of the rows: a task drives the plan into a channel of two batches
    /// (bounded memory); the reader waits on it, looking at Python's signals meanwhile.
    fn reader(&self, py: Python<'_>) -> PyResult<BatchReader> {
        let built = self.take_built(py)?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let source = Arc::clone(&built.source);
        let df = built.df;
        let _ctx = built.ctx;
        let task = runtime().spawn(async move {
            let mut stream = match df.execute_stream().await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(df_to_err(e))).await;
                    return;
                }
            };
            while let Some(batch) = stream.next().await {
                let failed = batch.is_err();
                if tx.send(batch.map_err(df_to_err)).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(BatchReader {
            schema: Arc::clone(&self.schema),
            rx,
            task,
            source,
            rejects: self.recipe.rejects.clone(),
            done: false,
        })
    }
}

/// A batch under the relation's schema: a file's own batches may say a column cannot be
/// null where the merged schema allows it, which Arrow consumers check field by field.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec())
}

/// An engine error as the stream's error: its one line.
fn df_to_err(e: sluice::datafusion::error::DataFusionError) -> ArrowError {
    ArrowError::ExternalError(Box::new(sluice::Error::Engine(e)))
}

/// After the last row: the rejected rows' file written, what the result does not hold
/// returned as lines (warned about), and an error when input files could not be read.
fn finish(source: &Source, rejects: &std::path::Path) -> sluice::Result<Vec<String>> {
    source.rejects.finish(false)?;
    let lines = source.unseen_lines("source", rejects);
    source.rejects.check_failed()?;
    Ok(lines)
}

fn warn_all(py: Python<'_>, lines: &[String]) -> PyResult<()> {
    let category = py.get_type::<UnreadRowsWarning>();
    for line in lines {
        let text = std::ffi::CString::new(line.replace('\0', " "))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        PyErr::warn(py, category.as_any(), &text, 2)?;
    }
    Ok(())
}

/// The rows of a relation, batch by batch, as a `RecordBatchReader` (what the Arrow C
/// stream exports).
struct BatchReader {
    schema: SchemaRef,
    rx: tokio::sync::mpsc::Receiver<Result<RecordBatch, ArrowError>>,
    task: tokio::task::JoinHandle<()>,
    source: Arc<Source>,
    rejects: PathBuf,
    done: bool,
}

impl Drop for BatchReader {
    fn drop(&mut self) {
        // A reader dropped early (a LIMIT in Python, an exception) stops the plan.
        self.task.abort();
    }
}

impl Iterator for BatchReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            let got = runtime().block_on(async {
                tokio::time::timeout(Duration::from_millis(50), self.rx.recv()).await
            });
            match got {
                Ok(Some(Ok(batch))) => return Some(conform(batch, &self.schema)),
                Ok(Some(Err(e))) => {
                    self.done = true;
                    return Some(Err(ArrowError::ExternalError(
                        sluice::error::one_line(&e).into(),
                    )));
                }
                Ok(None) => {
                    self.done = true;
                    return match finish(&self.source, &self.rejects) {
                        Ok(lines) => {
                            if !lines.is_empty() {
                                Python::attach(|py| {
                                    if let Err(e) = warn_all(py, &lines) {
                                        e.restore(py);
                                    }
                                });
                            }
                            None
                        }
                        Err(e) => Some(Err(ArrowError::ExternalError(
                            sluice::error::one_line(&e).into(),
                        ))),
                    };
                }
                Err(_elapsed) => {
                    let interrupted = Python::attach(|py| match py.check_signals() {
                        Ok(()) => false,
                        Err(e) => {
                            e.restore(py);
                            true
                        }
                    });
                    if interrupted {
                        self.done = true;
                        self.task.abort();
                        return Some(Err(ArrowError::ExternalError("interrupted".into())));
                    }
                }
            }
        }
    }
}

impl RecordBatchReader for BatchReader {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[pymethods]
impl Relation {
    /// Runs SQL over this relation, which the statement reads as `self` and `source` (or
    /// as `table_name`); returns a new relation.
    #[pyo3(signature = (query, table_name = None))]
    fn sql(&self, py: Python<'_>, query: String, table_name: Option<String>) -> PyResult<Relation> {
        let names = match table_name {
            Some(n) => vec![n],
            None => vec!["self".to_string(), "source".to_string()],
        };
        let step = Step { sql: query, names };
        let mut recipe = self.recipe.clone();
        recipe.steps.push(step.clone());
        // The parent's plan, when it still has one, is the child's input.
        let kept = self.built.lock().ok().and_then(|mut b| b.take());
        let built = match kept {
            Some(b) => {
                let Built { df, source, ctx } = b;
                let stepped = block_on(py, {
                    let ctx = ctx.clone();
                    async move { sql_step(&ctx, df, &step).await }
                })?;
                Built {
                    df: stepped.map_err(to_py)?,
                    source,
                    ctx,
                }
            }
            None => block_on(py, recipe.clone().build())?.map_err(to_py)?,
        };
        Ok(Relation {
            schema: Arc::new(built.df.schema().as_arrow().clone()),
            recipe,
            built: Mutex::new(Some(built)),
        })
    }

    /// The columns and types of the rows, as a `pyarrow.Schema`.
    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.schema.as_ref().to_pyarrow(py)
    }

    /// Reads every row into one `pyarrow.Table`. Rows that could not be read are not in it:
    /// each kind is said in an `UnreadRowsWarning` (rejected rows are in a file it names).
    fn to_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let built = self.take_built(py)?;
        let rejects = self.recipe.rejects.clone();
        let (batches, lines) = block_on(py, async move {
            let _ctx = built.ctx;
            let batches = built.df.collect().await?;
            let lines = finish(&built.source, &rejects)?;
            Ok::<_, sluice::Error>((batches, lines))
        })?
        .map_err(to_py)?;
        warn_all(py, &lines)?;
        let table = batches
            .into_iter()
            .map(|b| conform(b, &self.schema))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|b| arrow_pyarrow::Table::try_new(b, Arc::clone(&self.schema)))
            .map_err(|e| SluiceError::new_err(e.to_string()))?;
        table.into_pyarrow(py)
    }

    /// The rows as a streaming `pyarrow.RecordBatchReader`: batches are read as they are
    /// consumed, at most a few held at once.
    fn to_batches<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let reader: Box<dyn RecordBatchReader + Send> = Box::new(self.reader(py)?);
        reader.into_pyarrow(py)
    }

    /// The Arrow PyCapsule stream interface: `pyarrow.table(rel)`, `polars.DataFrame(rel)`
    /// and `duckdb.sql("... FROM rel")` read the relation through it, batch by batch.
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        // The schema is the relation's own; a consumer asking for another casts itself.
        let _ = requested_schema;
        let reader: Box<dyn RecordBatchReader + Send> = Box::new(self.reader(py)?);
        PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(reader), c"arrow_array_stream")
    }

    /// The plan DataFusion will run (logical and physical), as text.
    fn explain(&self, py: Python<'_>) -> PyResult<String> {
        let built = self.take_built(py)?;
        let df = built.df.clone();
        let text = block_on(py, async move {
            let batches = df.explain(false, false)?.collect().await?;
            let text = sluice::datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
                .to_string();
            Ok::<_, sluice::Error>(text)
        })?
        .map_err(to_py)?;
        // The plan built for this is still good for an execution.
        if let Ok(mut slot) = self.built.lock() {
            slot.get_or_insert(built);
        }
        Ok(text)
    }

    fn __repr__(&self) -> String {
        let columns: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect();
        format!(
            "<sluice.Relation over {} ({})>",
            self.recipe.read.paths.join(", "),
            columns.join(", ")
        )
    }
}

/// `sluice.scan(paths, format=None, *, rejects=None, threads=None, storage_options=None,
/// **options)`: the Python-facing function is in `sluice/__init__.py`; this one takes the
/// options as a dict of the `[source]` keys.
#[pyfunction]
#[pyo3(signature = (paths, options = None, rejects = None, threads = None, storage_options = None))]
pub fn scan(
    py: Python<'_>,
    paths: &Bound<'_, PyAny>,
    options: Option<&Bound<'_, PyDict>>,
    rejects: Option<PathBuf>,
    threads: Option<usize>,
    storage_options: Option<&Bound<'_, PyAny>>,
) -> PyResult<Relation> {
    let storage = convert::storage(storage_options)?;
    let table = match options {
        Some(d) => convert::table(d)?,
        None => toml::Table::new(),
    };
    let read = convert::read_options(paths, table, &storage)?;
    let rejects = match rejects {
        Some(dir) => std::path::absolute(&dir).unwrap_or(dir),
        None => sluice::ledger::rejects::scratch_dir("sluice-rejects"),
    };
    let threads = threads
        .unwrap_or_else(sluice::context::default_threads)
        .max(1);
    Relation::new(
        py,
        Recipe {
            read,
            steps: Vec::new(),
            threads,
            rejects,
        },
    )
}
