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

/// Show how a pipeline would run, without running it (with `--analyze`: run it, then show
/// the plan with what each stage did).
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
    /// Run the job as `sluice run` would (its output is written and its APIs are called),
    /// then show the plan with what happened: rows and time, and for each enrich stage its
    /// calls and the wall time its requests waited on the concurrency limit, the rate
    /// limit and `Retry-After` (like `EXPLAIN ANALYZE` in PostgreSQL and DuckDB).
    #[arg(long)]
    pub analyze: bool,
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
        let mut plan = sluice::explain::explain(&job).await?;
        if self.analyze {
            let report = job.run(&sluice::Progress::default()).await?;
            plan.add_run(&report);
        }
        match self.format {
            ExplainFormat::Text => print!("{plan}"),
            ExplainFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        }
        Ok(())
    }
}
