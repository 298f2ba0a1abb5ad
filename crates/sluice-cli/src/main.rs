//! `sluice`: ingest, enrich, transform and write data files in parallel.
//!
//! Exit codes: 0 success, 1 data or user error (one line on stderr), 2 usage error.

mod args;
mod cmd;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Ingest many data files in parallel, union them by name, transform with SQL, write clean output.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read files, folders and globs and write them as one dataset.
    Ingest(Box<cmd::ingest::IngestCmd>),
    /// Print the merged schema of inputs and how each file differs from it.
    Schema(cmd::schema::SchemaCmd),
    /// Run SQL over files and print the result.
    Query(cmd::query::QueryCmd),
    /// Run a pipeline file.
    Run(cmd::run::RunCmd),
    /// Show how a pipeline would run (inputs, partitions, stages, output, warnings).
    Explain(cmd::explain::ExplainCmd),
    /// Run a scheduler or an executor of a sluice cluster (Apache DataFusion Ballista).
    Cluster(cmd::cluster::ClusterCmd),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                // Ballista's client logs a failed job before returning its error, which
                // sluice prints itself as one line.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "warn,ballista_core::execution_plans::distributed_query=off",
                    )
                }),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs and CI captures stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let threads = match &cli.command {
        Command::Ingest(c) => c.run.threads,
        Command::Run(c) => c.run.threads,
        Command::Query(c) => c.threads,
        Command::Schema(_) => None,
        Command::Explain(c) => c.threads,
        Command::Cluster(_) => None,
    }
    .unwrap_or_else(sluice::context::default_threads)
    .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Ingest(c) => c.execute(threads).await,
            Command::Schema(c) => c.execute().await,
            Command::Query(c) => c.execute(threads).await,
            Command::Run(c) => c.execute().await,
            Command::Explain(c) => c.execute().await,
            Command::Cluster(c) => c.execute().await,
        }
    });
    // The command is done and its output committed: what the runtime still holds (idle HTTP
    // connections to close, answers to free) is the operating system's to clean up. Waiting
    // for each task to wind down took 12-14 ms after an enrich job's last write.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", sluice::error::one_line(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

/// A closed stdout (e.g. `sluice query ... | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
