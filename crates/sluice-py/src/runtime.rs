//! One multi-threaded runtime per process, and running a job on it from Python: the GIL is
//! released while the job runs, and Ctrl-C (`KeyboardInterrupt`) cancels it.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;

use crate::errors::SluiceError;

/// The engine's runtime: as many worker threads as cores (each job's partitions are its
/// own setting), with a main thread's stack.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(sluice::context::default_threads().max(2))
            .thread_name("sluice")
            // A job's plan is built and started on a worker (the CLI does that on its main
            // thread, 8 MiB): deep plans recurse through `execute`, more so in debug builds,
            // where tokio's default 2 MiB overflowed.
            .thread_stack_size(16 * 1024 * 1024)
            .enable_all()
            .build()
            .expect("the sluice runtime cannot start: no threads?")
    })
}

/// How often a waiting call looks at Python's signals.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Runs `fut` on the runtime with the GIL released and returns its output. Every
/// [`SIGNAL_CHECK`] the calling thread takes the GIL back to run Python's signal handlers: on
/// Ctrl-C (or any handler raising) the job is cancelled and awaited — its plan dropped,
/// nothing committed — before the exception is raised.
pub fn block_on<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut handle = runtime().spawn(fut);
    loop {
        let waited = py.detach(|| {
            runtime().block_on(async { tokio::time::timeout(SIGNAL_CHECK, &mut handle).await })
        });
        match waited {
            Ok(Ok(out)) => return Ok(out),
            Ok(Err(join)) => {
                return Err(SluiceError::new_err(format!(
                    "sluice stopped unexpectedly (a bug: please report it): {join}"
                )))
            }
            Err(_elapsed) => {
                if let Err(interrupt) = py.check_signals() {
                    handle.abort();
                    // Wait for the job to be gone before Python goes on.
                    py.detach(|| {
                        runtime().block_on(async {
                            let _ = (&mut handle).await;
                        })
                    });
                    return Err(interrupt);
                }
            }
        }
    }
}
