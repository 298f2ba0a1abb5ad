//! `sluice.run(...)` and `sluice.Pipeline().run()`: jobs built from a pipeline file, a
//! dict in its shape, or the builder's steps, run by the engine with Python functions as
//! batch stages. Returns the report as JSON (`--report-json`'s fields), which
//! `sluice.Report` wraps.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_pyarrow::{FromPyArrow, ToPyArrow};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use sluice::datafusion::arrow::array::RecordBatch;
use sluice::datafusion::error::DataFusionError;
use sluice::enrich::EnrichSpec;
use sluice::job::{Stage, Transform};
use sluice::lookup::LookupSpec;
use sluice::{BatchFn, Job, Progress};

use crate::convert;
use crate::errors::{to_py, FunctionError};
use crate::runtime::block_on;

/// What a job's Python batch functions share: the first exception one raised (raised again
/// as the `FunctionError`'s cause when the job has stopped), and the calls in flight, so a
/// cancelled job returns to Python only once none is running and none will start.
#[derive(Default)]
struct PyCalls {
    raised: Mutex<Option<PyErr>>,
    cancelled: std::sync::atomic::AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
}

impl PyCalls {
    /// No call starts from now on; returns when the running ones have returned (the engine's
    /// tasks may outlive the cancelled job by a moment, and must never enter a Python that
    /// is shutting down).
    fn cancel_and_wait(&self, py: Python<'_>) {
        self.cancelled.store(true, Ordering::SeqCst);
        py.detach(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while self.in_flight.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }
}

/// A Python callable as a batch stage. It is called with a `pyarrow.RecordBatch` (holding
/// the GIL, one call at a time on a standard CPython) and returns one; reading, decoding,
/// enrich and writing go on in Rust meanwhile.
fn python_stage(name: String, f: Py<PyAny>, calls: Arc<PyCalls>) -> BatchFn {
    let label = name.clone();
    BatchFn {
        name,
        f: Arc::new(move |batch: RecordBatch| {
            // Counted before the check: a cancel that sees no call in flight sees every
            // later one give up here.
            calls.in_flight.fetch_add(1, Ordering::SeqCst);
            let _done = InFlight(&calls.in_flight);
            if calls.cancelled.load(Ordering::SeqCst) {
                return Err(DataFusionError::Execution(format!(
                    "batch function '{label}': the job was cancelled"
                )));
            }
            Python::attach(|py| {
                let arg = batch.to_pyarrow(py)?;
                let out = f.bind(py).call1((arg,))?;
                RecordBatch::from_pyarrow_bound(&out)
            })
            .map_err(|e: PyErr| {
                let line = Python::attach(|py| {
                    let text = e.to_string();
                    if let Ok(mut slot) = calls.raised.lock() {
                        if slot.is_none() {
                            *slot = Some(e.clone_ref(py));
                        }
                    }
                    text
                });
                DataFusionError::Execution(format!("batch function '{label}' raised {line}"))
            })
        }),
    }
}

/// Ends a call in flight when dropped (also when the call panics).
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs a job with the GIL released; a progress line on stderr when asked.
fn run_job(py: Python<'_>, job: Job, progress: bool, calls: Arc<PyCalls>) -> PyResult<String> {
    let counters = Arc::new(Progress::default());
    let display = progress.then(|| Display::start(Arc::clone(&counters)));
    let result = block_on(py, {
        let counters = Arc::clone(&counters);
        async move { job.run(&counters).await }
    });
    if let Some(d) = display {
        d.stop();
    }
    // Done, failed or interrupted: no Python call may start after this returns (the
    // engine's tasks can outlive a failed or cancelled job by a moment).
    calls.cancel_and_wait(py);
    let result = result?;
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            let first = calls.raised.lock().ok().and_then(|mut r| r.take());
            return Err(match first {
                // The function's own exception, traceback and all, is the cause.
                Some(cause) => {
                    let err = FunctionError::new_err(sluice::error::one_line(&e));
                    err.set_cause(py, Some(cause));
                    err
                }
                None => to_py(e),
            });
        }
    };
    serde_json::to_string(&report).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// `sluice.run("pipeline.toml")`.
#[pyfunction]
#[pyo3(signature = (path, progress = false))]
pub fn run_file(py: Python<'_>, path: PathBuf, progress: bool) -> PyResult<String> {
    let job = sluice::pipeline::load(&path).map_err(to_py)?;
    run_job(py, job, progress, Arc::default())
}

/// `sluice.run({...})`: a dict in the pipeline file's shape (`source`, `transform`,
/// `lookup`, `enrich`, `sink`, `settings`, `storage`); relative paths are the working
/// directory's.
#[pyfunction]
#[pyo3(signature = (spec, progress = false))]
pub fn run_toml(py: Python<'_>, spec: &Bound<'_, PyDict>, progress: bool) -> PyResult<String> {
    let doc = convert::table(spec)?;
    let text = toml::to_string(&doc).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let job = sluice::pipeline::parse(&text, Path::new("<dict>")).map_err(to_py)?;
    run_job(py, job, progress, Arc::default())
}

/// `sluice.Pipeline().run()`: the builder's steps in order, each a tuple whose first item
/// names it: `("read", paths, options)`, `("sql", query, name)`, `("lookup", options)`,
/// `("enrich", options)`, `("map_batches", name, function)`, `("write", path, options)`,
/// `("threads", n)`, `("storage", options)`.
#[pyfunction]
#[pyo3(signature = (steps, progress = false))]
pub fn run_steps(py: Python<'_>, steps: &Bound<'_, PyList>, progress: bool) -> PyResult<String> {
    let calls = Arc::<PyCalls>::default();
    let mut storage = sluice::storage::stores::StorageOptions::new();
    let mut job = Job {
        threads: sluice::context::default_threads(),
        ..Job::default()
    };
    let (mut read, mut write) = (None, None);
    for step in steps.iter() {
        let step = step
            .cast::<PyTuple>()
            .map_err(|_| PyTypeError::new_err("a pipeline step is a tuple"))?;
        let kind: String = step.get_item(0)?.extract()?;
        let options = |i: usize| -> PyResult<toml::Table> {
            let item = step.get_item(i)?;
            match item.cast::<PyDict>() {
                Ok(d) => convert::table(d),
                Err(_) => Ok(toml::Table::new()),
            }
        };
        match kind.as_str() {
            "storage" => storage = convert::storage(Some(&step.get_item(1)?))?,
            "threads" => job.threads = step.get_item(1)?.extract::<usize>()?.max(1),
            "read" => read = Some((step.get_item(1)?, options(2)?)),
            "write" => write = Some((step.get_item(1)?, options(2)?)),
            "sql" => job.stages.push(Stage::Sql(Transform {
                sql: step.get_item(1)?.extract()?,
                name: step.get_item(2)?.extract()?,
            })),
            "lookup" => {
                let mut spec: LookupSpec = convert::section("lookup", options(1)?)?;
                spec.storage = storage.clone();
                job.stages.push(Stage::Lookup(Box::new(spec)));
            }
            "enrich" => {
                let spec: EnrichSpec = convert::section("enrich", options(1)?)?;
                job.stages.push(Stage::Enrich(Box::new(spec)));
            }
            "map_batches" => {
                let name: String = step.get_item(1)?.extract()?;
                let f = step.get_item(2)?.unbind();
                job.stages
                    .push(Stage::Batches(python_stage(name, f, Arc::clone(&calls))));
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown pipeline step '{other}'"
                )))
            }
        }
    }
    let Some((paths, options)) = read else {
        return Err(PyValueError::new_err(
            "a pipeline reads something: call .read(paths) first",
        ));
    };
    let Some((path, sink)) = write else {
        return Err(PyValueError::new_err(
            "a pipeline writes somewhere: call .write(path) before .run()",
        ));
    };
    job.source = convert::read_options(&paths, options, &storage)?;
    job.sink = convert::sink_options(&path, sink, &storage)?;
    run_job(py, job, progress, calls)
}

/// A progress line on stderr, redrawn four times a second while a job runs (only on a
/// terminal: indicatif draws nothing elsewhere).
struct Display {
    bar: indicatif::ProgressBar,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Display {
    fn start(progress: Arc<Progress>) -> Display {
        let bar = indicatif::ProgressBar::with_draw_target(
            None,
            indicatif::ProgressDrawTarget::stderr_with_hz(4),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (bar, stop) = (bar.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let files = progress.files_total.load(Ordering::Relaxed);
                    bar.set_message(format!(
                        "files {}/{} | {} read | rows {}",
                        progress.files_done().min(files),
                        files,
                        indicatif::HumanBytes(progress.bytes_read()),
                        indicatif::HumanCount(progress.rows_out()),
                    ));
                    bar.tick();
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        Display {
            bar,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}
