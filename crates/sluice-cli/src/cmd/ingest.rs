//! `sluice ingest INPUT... --to OUT`

use clap::Args;
use sluice::{Job, Stage, Transform};

use crate::args::{DbArgs, ReadArgs, RunArgs, WriteArgs};

/// Read files, folders and globs and write them as one dataset.
#[derive(Debug, Args)]
pub struct IngestCmd {
    /// Input files, folders (read recursively) and globs ('data/2024-*/*.csv', 'logs/**/*.json').
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub write: WriteArgs,
    /// SQL to apply before writing (repeatable); the table `source` is the previous result.
    #[arg(long, value_name = "SELECT")]
    pub sql: Vec<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl IngestCmd {
    /// Runs the ingest.
    pub async fn execute(self, threads: usize) -> anyhow::Result<()> {
        let job = Job {
            source: sluice::ReadOptions {
                database: self.db.to_options(),
                ..self.read.to_options(self.inputs.clone())
            },
            stages: self
                .sql
                .iter()
                .map(|s| {
                    Stage::Sql(Transform {
                        name: None,
                        sql: s.clone(),
                    })
                })
                .collect(),
            sink: sluice::SinkOptions {
                storage: self.read.to_options(Vec::new()).storage,
                ..self.write.to_options()
            },
            threads,
            ..Job::default()
        };
        super::run_job(job, &self.run).await
    }
}
