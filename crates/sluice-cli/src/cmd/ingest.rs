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
        // `--table` names the table of whichever side is a database (the input's when both
        // are; `--to-table` names the output's).
        let reads_database = self.inputs.iter().any(|i| sluice::db::is_database(i));
        let mut database = self.db.to_options();
        let mut sink = self.write.to_options();
        if sluice::db::is_database(&sink.path) && sink.table.is_none() && !reads_database {
            sink.table = database.table.take();
        }
        let job = Job {
            source: sluice::ReadOptions {
                database,
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
                ..sink
            },
            threads,
            ..Job::default()
        };
        super::run_job(job, &self.run).await
    }
}
