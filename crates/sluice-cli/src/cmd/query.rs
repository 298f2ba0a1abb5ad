//! `sluice query "SELECT ..." --table NAME=INPUT...`

use std::io::Write;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use sluice::datafusion::arrow::{csv, json, util::pretty};
use sluice::Source;

use crate::args::ReadArgs;

/// How to print query results.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    /// An aligned table.
    Table,
    /// CSV with a header.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

/// Run SQL over files and print the result.
#[derive(Debug, Args)]
pub struct QueryCmd {
    /// The SQL query (DataFusion dialect).
    #[arg(value_name = "SQL")]
    pub sql: String,
    /// Register a table: NAME=INPUT (repeat the flag to add more inputs or tables).
    #[arg(
        long = "table",
        short = 't',
        value_name = "NAME=INPUT",
        required = true
    )]
    pub tables: Vec<String>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
    /// Worker threads (default: number of cores).
    #[arg(long, value_name = "N", value_parser = crate::args::parse_positive)]
    pub threads: Option<usize>,
    /// Folder for rejected rows (`--on-error reject`, the default): one
    /// `TABLE/rejects.ndjson` per table with bad rows. Default: a new folder under the
    /// system's temporary folder, named on stderr when a row is rejected.
    #[arg(long, value_name = "DIR")]
    pub rejects: Option<std::path::PathBuf>,
    /// Run the query on a sluice cluster (`sluice cluster scheduler`): df://HOST:PORT. Every
    /// input, and the rejects folder (`--rejects`), must be reachable by every executor at
    /// the same path: the executors write rejected rows and their counts there.
    #[arg(long, value_name = "df://HOST:PORT")]
    pub cluster: Option<sluice::cluster::SchedulerUrl>,
}

impl QueryCmd {
    /// Runs the query and prints the result to stdout.
    pub async fn execute(self, threads: usize) -> anyhow::Result<()> {
        let mut tables: Vec<(String, Vec<String>)> = Vec::new();
        for spec in &self.tables {
            let Some((name, input)) = spec.split_once('=') else {
                bail!("--table takes NAME=INPUT, not '{spec}'");
            };
            let (name, input) = (name.trim(), input.trim());
            if name.is_empty() || input.is_empty() {
                bail!("--table takes NAME=INPUT, not '{spec}'");
            }
            match tables.iter_mut().find(|(n, _)| n == name) {
                Some((_, inputs)) => inputs.push(input.to_string()),
                None => tables.push((name.to_string(), vec![input.to_string()])),
            }
        }
        let ctx = match &self.cluster {
            Some(_) => sluice::cluster::client_session(threads, None),
            None => sluice::context::session(threads),
        };
        let rejects_root = match &self.rejects {
            // A whole path: a cluster's executors write there too.
            Some(dir) => std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
            None => sluice::ledger::rejects::scratch_dir("sluice-query-rejects"),
        };
        if self.cluster.is_some()
            && tables
                .iter()
                .flat_map(|(_, inputs)| inputs)
                .any(|i| sluice::db::is_database(i))
        {
            anyhow::bail!(
                "a database source is read here, not on a cluster (yet): run the query without \
                 --cluster"
            );
        }
        let mut sources = Vec::new();
        for (name, inputs) in tables {
            let source = Source::open(&ctx, self.read.to_options(inputs)).await?;
            // Bad rows are never dropped without a trace: they go to a rejects file.
            source.rejects.set_dir(rejects_root.join(&name));
            let df = source.to_dataframe(&ctx)?;
            ctx.register_table(name.as_str(), df.into_view())?;
            sources.push((name, source));
        }
        let df = ctx
            .sql(&self.sql)
            .await
            .with_context(|| format!("in query: {}", self.sql.trim()))?;
        let stream = match &self.cluster {
            None => df.execute_stream().await,
            Some(url) => match df.create_physical_plan().await {
                Ok(plan) => {
                    sluice::cluster::execute(url, plan, &ctx.copied_config(), &rejects_root, None)
                        .await
                }
                Err(e) => Err(e),
            },
        };
        let result = match stream {
            Ok(stream) => self.print(stream).await,
            Err(e) => Err(e.into()),
        };
        // A job that failed on the cluster: the line sluice wrote there, not Ballista's report.
        let result = result.map_err(|e| {
            match e
                .downcast_ref::<sluice::datafusion::error::DataFusionError>()
                .filter(|_| self.cluster.is_some())
                .and_then(sluice::cluster::job_error)
            {
                Some(line) => anyhow::anyhow!(line),
                None => e,
            }
        });
        // What the executors counted and rejected comes back from their ledgers.
        if self.cluster.is_some() {
            sluice::cluster::absorb(&ctx.copied_config(), &rejects_root)?;
        }
        // What the query did not see is said on stderr, whether printing worked or not.
        for (name, source) in &sources {
            source.rejects.finish(false)?;
            for line in source.unseen_lines(name, &rejects_root.join(name)) {
                eprintln!("warning: {line}");
            }
        }
        result?;
        for (_, source) in &sources {
            source.rejects.check_failed()?;
        }
        Ok(())
    }

    async fn print(
        &self,
        mut stream: sluice::datafusion::execution::SendableRecordBatchStream,
    ) -> anyhow::Result<()> {
        let stdout = std::io::stdout();
        match self.output {
            Output::Table => {
                let mut batches = Vec::new();
                while let Some(batch) = stream.next().await {
                    batches.push(batch?);
                }
                let text = pretty::pretty_format_batches(&batches)?;
                writeln!(stdout.lock(), "{text}")?;
            }
            Output::Csv => {
                let mut writer = csv::Writer::new(stdout.lock());
                while let Some(batch) = stream.next().await {
                    writer.write(&batch?)?;
                }
            }
            Output::Ndjson => {
                let mut writer = json::LineDelimitedWriter::new(stdout.lock());
                while let Some(batch) = stream.next().await {
                    writer.write(&batch?)?;
                }
                writer.finish()?;
            }
        }
        Ok(())
    }
}
