//! `sluice cluster scheduler` and `sluice cluster executor`: Ballista's scheduler and
//! executor hosted by the sluice binary, with sluice's plan nodes registered.

use std::net::SocketAddr;

use clap::{Args, Subcommand};

/// Run a process of a sluice cluster (Apache DataFusion Ballista).
#[derive(Debug, Args)]
pub struct ClusterCmd {
    #[command(subcommand)]
    pub process: Process,
}

/// Which process.
#[derive(Debug, Subcommand)]
pub enum Process {
    /// The scheduler: jobs are submitted to it and it hands their tasks to executors.
    Scheduler {
        /// Address to serve on.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
        bind: SocketAddr,
        /// Seconds without a heartbeat after which an executor counts as lost: its running
        /// tasks, and finished ones whose output it held, run again elsewhere. Keep it
        /// above twice the executors' `--heartbeat`.
        #[arg(long, value_name = "SECS", default_value_t = 180, value_parser = parse_secs)]
        executor_timeout: u64,
    },
    /// An executor: registers with the scheduler and runs tasks.
    Executor {
        /// The scheduler: df://HOST:PORT or HOST:PORT.
        #[arg(long, value_name = "HOST:PORT")]
        scheduler: sluice::cluster::SchedulerUrl,
        /// Address to serve shuffle data on (Arrow Flight).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50051")]
        bind: SocketAddr,
        /// Port of the executor's gRPC service (on the same host).
        #[arg(long, value_name = "PORT", default_value_t = 50052)]
        grpc_port: u16,
        /// Tasks run at once (default: number of cores).
        #[arg(long, value_name = "N", value_parser = crate::args::parse_positive)]
        slots: Option<usize>,
        /// Folder for shuffle files (default: a temporary folder).
        #[arg(long, value_name = "DIR")]
        work_dir: Option<std::path::PathBuf>,
        /// Seconds between heartbeats to the scheduler.
        #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = parse_secs)]
        heartbeat: u64,
        /// The host name or address other executors and clients reach this one at
        /// (default: the address the scheduler sees it connect from).
        #[arg(long, value_name = "HOST")]
        advertise_host: Option<String>,
    },
}

impl ClusterCmd {
    /// Runs the process until it is stopped.
    pub async fn execute(self) -> anyhow::Result<()> {
        match self.process {
            Process::Scheduler {
                bind,
                executor_timeout,
            } => sluice::cluster::run_scheduler(bind, executor_timeout).await?,
            Process::Executor {
                scheduler,
                bind,
                grpc_port,
                slots,
                work_dir,
                heartbeat,
                advertise_host,
            } => {
                sluice::cluster::run_executor(sluice::cluster::ExecutorOptions {
                    scheduler,
                    bind,
                    grpc_port,
                    slots: slots.unwrap_or_else(sluice::context::default_threads),
                    work_dir,
                    heartbeat,
                    advertise_host,
                    functions: Vec::new(),
                })
                .await?
            }
        }
        Ok(())
    }
}

/// A whole number of seconds, at least 1.
fn parse_secs(s: &str) -> Result<u64, String> {
    crate::args::parse_positive(s).map(|n| n as u64)
}
