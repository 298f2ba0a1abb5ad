//! `sluice explain PIPELINE.toml`

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Output of `explain`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExplainFormat {
    /// Text for people.
    Text,
    /// JSON for tools.
    Json,
}

/// Show how a pipeline would run, without running it.
#[derive(Debug, Args)]
pub struct ExplainCmd {
    /// The pipeline file.
    #[arg(value_name = "PIPELINE")]
    pub pipeline: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ExplainFormat,
    /// Threads to plan for (default: the pipeline's, else the number of cores).
    #[arg(long, value_name = "N", value_parser = crate::args::parse_positive)]
    pub threads: Option<usize>,
    /// Plan for a cluster (df://HOST:PORT, or the pipeline's `[cluster] url`): also show
    /// the stages and tasks it would run as. The cluster is not contacted.
    #[arg(long, value_name = "df://HOST:PORT")]
    pub cluster: Option<sluice::cluster::SchedulerUrl>,
}

impl ExplainCmd {
    /// Plans the pipeline and prints the plan.
    pub async fn execute(self) -> anyhow::Result<()> {
        let mut job = sluice::pipeline::load(&self.pipeline)?;
        if let Some(t) = self.threads {
            job.threads = t;
        }
        if let Some(url) = self.cluster {
            job.cluster = Some(url);
        }
        let plan = sluice::explain::explain(&job).await?;
        match self.format {
            ExplainFormat::Text => print!("{plan}"),
            ExplainFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        }
        Ok(())
    }
}
