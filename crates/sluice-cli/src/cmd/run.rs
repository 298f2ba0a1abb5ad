//! `sluice run PIPELINE.toml`

use std::path::PathBuf;

use clap::Args;

use crate::args::RunArgs;

/// Run a pipeline file.
#[derive(Debug, Args)]
pub struct RunCmd {
    /// The pipeline file ([source], [[transform]], [sink], [settings]).
    #[arg(value_name = "PIPELINE")]
    pub pipeline: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

impl RunCmd {
    /// Loads and runs the pipeline.
    pub async fn execute(self) -> anyhow::Result<()> {
        let mut job = sluice::pipeline::load(&self.pipeline)?;
        if let Some(t) = self.run.threads {
            job.threads = t;
        }
        super::run_job(job, &self.run).await
    }
}
