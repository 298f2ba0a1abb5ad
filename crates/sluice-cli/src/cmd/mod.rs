//! One module per subcommand.

pub mod cluster;
pub mod explain;
pub mod ingest;
pub mod query;
pub mod run;
pub mod schema;

use std::sync::Arc;

use anyhow::Context;
use sluice::{Job, Progress};

use crate::args::RunArgs;
use crate::progress::{summary, ProgressDisplay};

/// Runs a job with progress, then prints the summary and writes the report.
pub async fn run_job(mut job: Job, run: &RunArgs) -> anyhow::Result<()> {
    if let Some(url) = &run.cluster {
        job.cluster = Some(url.clone());
    }
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(Arc::clone(&progress), run.progress);
    let result = job.run(&progress).await;
    display.finish();
    let report = result?;
    if let Some(path) = &run.report_json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    if !run.quiet {
        eprint!("{}", summary(&report));
    }
    Ok(())
}
