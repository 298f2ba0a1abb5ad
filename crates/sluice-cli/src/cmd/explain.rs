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
}

impl ExplainCmd {
    /// Plans the pipeline and prints the plan.
    pub async fn execute(self) -> anyhow::Result<()> {
        let mut job = sluice::pipeline::load(&self.pipeline)?;
        if let Some(t) = self.threads {
            job.threads = t;
        }
        let plan = sluice::explain::explain(&job).await?;
        match self.format {
            ExplainFormat::Text => print!("{plan}"),
            ExplainFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        }
        Ok(())
    }
}
