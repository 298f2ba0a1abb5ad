//! Running sluice's plans on an Apache DataFusion Ballista cluster.
//!
//! sluice writes no scheduler, shuffle or RPC of its own: the `sluice` binary hosts
//! Ballista's scheduler ([`run_scheduler`]) and executor ([`run_executor`]) with sluice's
//! codec registered ([`codec`]: sluice's plan nodes as their configuration, Ballista's own
//! nodes as Ballista writes them). The client plans a job physically, exactly as it would
//! for a local run, and submits that plan ([`execute`]); the scheduler cuts it into stages at
//! its exchanges and the executors run the tasks. Plan nodes hold only configuration and ids
//! (see [`crate::services`]), so what a task needs is rebuilt in the executor's session: a
//! read's books are made there on first use ([`Services::remote`]).
//!
//! A job's books travel as data: the job's session names each read's rejects folder and a
//! ledger folder ([`crate::services::SluiceOptions`], on storage every executor shares);
//! each task writes its rejected rows there and, once it has succeeded, its ledger
//! ([`engine`]), and the client reads them back ([`absorb`]).

pub mod engine;
pub mod partitions;
pub mod reach;
pub mod stores;

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::config::SessionConfig;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use datafusion_proto::protobuf::PhysicalPlanNode;

use crate::codec::SluiceCodec;
use crate::services::Services;

/// The codec of every cluster process: sluice's nodes, then Ballista's.
pub fn codec() -> Arc<dyn PhysicalExtensionCodec> {
    Arc::new(SluiceCodec::wrapping(Arc::new(
        BallistaPhysicalExtensionCodec::default(),
    )))
}

/// The session configuration of a scheduler's or executor's session: sluice's settings,
/// Ballista's, and services that make a read's books on first use. The client's settings
/// are applied over it for each job.
pub fn process_config() -> SessionConfig {
    crate::context::session_config(crate::context::default_threads(), None)
        .with_extension(Arc::new(Services::remote()))
        .upgrade_for_ballista()
}

/// A client session whose plans can run on a cluster: [`crate::context::session`]'s, with
/// the settings Ballista enforces on its own plans (no round-robin repartitioning, which a
/// stage boundary would read once per consuming task).
/// `split_min_size`: as for [`crate::context::session_with`].
pub fn client_session(
    threads: usize,
    split_min_size: Option<usize>,
) -> datafusion::prelude::SessionContext {
    crate::context::session_from(
        crate::context::session_config(threads, split_min_size).upgrade_for_ballista(),
    )
}

/// Where a cluster's scheduler listens: `df://HOST:PORT` (or `HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerUrl {
    /// Host name or address.
    pub host: String,
    /// gRPC port.
    pub port: u16,
}

impl std::str::FromStr for SchedulerUrl {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> crate::error::Result<Self> {
        let bad = || {
            crate::error::Error::Config(format!("a cluster is given as df://HOST:PORT, not '{s}'"))
        };
        let rest = s.strip_prefix("df://").unwrap_or(s).trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(SchedulerUrl {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        })
    }
}

impl std::fmt::Display for SchedulerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "df://{}:{}", self.host, self.port)
    }
}

/// Runs Ballista's scheduler on `bind` with sluice's codec until the process ends. An
/// executor silent for `executor_timeout` seconds counts as lost (its tasks run again).
pub async fn run_scheduler(bind: SocketAddr, executor_timeout: u64) -> crate::error::Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        executor_timeout_seconds: executor_timeout.max(2),
        // Checked often enough to notice a loss within the timeout.
        expire_dead_executor_interval_seconds: (executor_timeout / 4).clamp(1, 15),
        no_executors_grace_period_seconds: executor_timeout.max(2),
        override_config_producer: Some(Arc::new(process_config)),
        override_physical_codec: Some(codec()),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(cluster_error)?;
    ballista_scheduler::scheduler_process::start_server(cluster, bind, Arc::new(config))
        .await
        .map_err(cluster_error)
}

/// How to run one executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler to register with.
    pub scheduler: SchedulerUrl,
    /// Where this executor serves its shuffle output (Arrow Flight).
    pub bind: SocketAddr,
    /// Where it serves Ballista's gRPC (task status, cancellation).
    pub grpc_port: u16,
    /// Tasks it runs at once.
    pub slots: usize,
    /// Where shuffle files go (a temporary folder by default).
    pub work_dir: Option<std::path::PathBuf>,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat: u64,
    /// The host others reach this executor at (default: where the scheduler sees it from).
    pub advertise_host: Option<String>,
    /// Batch functions the executor's tasks find by name (a program that embeds the
    /// executor registers its own Rust functions here; the `sluice` binary has none).
    pub functions: Vec<crate::function::BatchFn>,
}

/// Runs Ballista's executor with sluice's codec and session until the process ends.
pub async fn run_executor(options: ExecutorOptions) -> crate::error::Result<()> {
    use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
    let functions = options.functions.clone();
    // How the executor names itself in its lines: where others reach it.
    let name = format!(
        "{}:{}",
        options
            .advertise_host
            .clone()
            .unwrap_or_else(|| options.bind.ip().to_string()),
        options.bind.port()
    );
    let temp = options.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let check = Services::default();
    for f in &functions {
        check.register_function(f)?;
    }
    let config = ExecutorProcessConfig {
        bind_host: options.bind.ip().to_string(),
        port: options.bind.port(),
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler.host.clone(),
        scheduler_port: options.scheduler.port,
        vcores: options.slots.max(1),
        work_dir: options.work_dir.map(|d| d.display().to_string()),
        executor_heartbeat_interval_seconds: options.heartbeat.max(1),
        external_host: options.advertise_host,
        override_config_producer: Some(Arc::new(move || {
            let config = process_config();
            if let Ok(services) = Services::of(&config) {
                for f in &functions {
                    // Names are unique: checked when the executor starts.
                    let _ = services.register_function(f);
                }
            }
            config
        })),
        override_runtime_producer: Some(Arc::new(move |config: &SessionConfig| {
            // A job's remote inputs are opened here from this executor's own credentials.
            let options = crate::services::SluiceOptions::storage_options(config);
            let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
                .with_temp_file_path(temp.clone())
                .with_object_store_registry(Arc::new(stores::ExecutorStores::new(options)))
                .build()?;
            Ok(Arc::new(runtime))
        })),
        override_physical_codec: Some(codec()),
        override_execution_engine: Some(Arc::new(engine::SluiceEngine::new(name))),
        ..Default::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(cluster_error)
}

/// `plan` with each sluice scan turned into a `DataSourceExec` whose files are the scan's
/// partitions ([`partitions::partitioned`]): the same rows, in the same partitions, in a
/// leaf Ballista knows how to restrict to each task's partitions.
///
/// Ballista gives each task a copy of its stage's plan restricted to the task's partitions,
/// and it knows how to restrict only its own and DataFusion's leaves: a sluice scan left as
/// it is would have every task read the scan's first partition.
pub fn restrictable_scans(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};

    use crate::source::csv_scan::CsvScanExec;
    use crate::source::file_scan::FileByFileExec;
    plan.transform_up(|node| {
        let (store_url, parts): (_, Vec<Arc<dyn ExecutionPlan>>) =
            if let Some(scan) = node.downcast_ref::<CsvScanExec>() {
                (
                    scan.store_url.clone(),
                    scan.one_per_partition()?
                        .into_iter()
                        .map(|s| Arc::new(s) as Arc<dyn ExecutionPlan>)
                        .collect(),
                )
            } else if let Some(scan) = node.downcast_ref::<FileByFileExec>() {
                (
                    scan.store_url.clone(),
                    scan.one_per_partition()
                        .into_iter()
                        .map(|s| Arc::new(s) as Arc<dyn ExecutionPlan>)
                        .collect(),
                )
            } else {
                return Ok(Transformed::no(node));
            };
        let scan = partitions::Partitioned {
            schema: node.schema(),
            scan: node.name().to_string(),
            store_url,
            groups: parts.into_iter().map(|p| vec![p]).collect(),
            limit: None,
        };
        Ok(Transformed::yes(
            partitions::partitioned(scan, None) as Arc<dyn ExecutionPlan>
        ))
    })
    .map(|t| t.data)
}

/// `plan` with the limits of each enrich stage keyed across partitions (see
/// [`crate::job::apply_stages_spread`]) divided among the tasks that run it, one per
/// partition of its input: `concurrency` and `rate_limit` hold for the whole stage, however
/// many of its tasks run at once.
pub fn split_stage_limits(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};

    use crate::stage::MapExec;
    use crate::stage_spec::StageSpec;
    plan.transform_up(|node| {
        let Some(map) = node.downcast_ref::<MapExec>() else {
            return Ok(Transformed::no(node));
        };
        let StageSpec::Enrich {
            spec,
            storage,
            books,
            by_key: true,
        } = map.spec()
        else {
            return Ok(Transformed::no(node));
        };
        let Some(input) = node.children().first().map(|c| Arc::clone(*c)) else {
            return Ok(Transformed::no(node));
        };
        let tasks = input.properties().output_partitioning().partition_count();
        let spec = StageSpec::Enrich {
            spec: Box::new(
                spec.split_among(tasks)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?,
            ),
            storage: storage.clone(),
            books: *books,
            by_key: true,
        };
        Ok(Transformed::yes(Arc::new(MapExec::new(
            input,
            map.stage(),
            spec,
            map.describe().to_string(),
            node.schema(),
        ))))
    })
    .map(|t| t.data)
}

/// `plan` as a cluster runs it: each sluice scan a leaf Ballista can restrict to a task's
/// partitions ([`restrictable_scans`]) and each keyed enrich stage's limits divided among its
/// tasks ([`split_stage_limits`]). What [`execute`] submits and `sluice explain --cluster`
/// shows.
pub fn for_cluster(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    split_stage_limits(restrictable_scans(plan)?)
}

/// Runs `plan` (planned in a session made with `config`) on the cluster at `scheduler`:
/// the rows of its output, as they come back. Its tasks leave their ledgers in
/// `ledger_dir` (on storage every executor shares), for [`absorb`] once the stream ended.
/// With `remote_books` (an object-store prefix), the executors share no folder: each task
/// writes its ledger and rejected rows in `ledger_dir` on its own machine and uploads them
/// there once it has succeeded.
pub async fn execute(
    scheduler: &SchedulerUrl,
    plan: Arc<dyn ExecutionPlan>,
    config: &SessionConfig,
    ledger_dir: &std::path::Path,
    remote_books: Option<&str>,
) -> Result<SendableRecordBatchStream> {
    let plan = for_cluster(plan)?;
    let mut config = config.clone();
    // Where each read's tasks leave their rejected rows: the client's folders, or each
    // task's own ledger folder when the books are uploaded.
    let dirs: std::collections::BTreeMap<String, String> = Services::of(&config)?
        .all_books()
        .iter()
        .filter_map(|r| {
            let dir = match remote_books {
                Some(_) => ledger_dir.to_path_buf(),
                None => r.folder()?,
            };
            Some((r.id().to_string(), dir.display().to_string()))
        })
        .collect();
    if let Some(o) = config
        .options_mut()
        .extensions
        .get_mut::<crate::services::SluiceOptions>()
    {
        o.rejects_dirs =
            serde_json::to_string(&dirs).map_err(|e| DataFusionError::External(Box::new(e)))?;
        o.ledger_dir = ledger_dir.display().to_string();
        o.remote_books = remote_books.unwrap_or_default().to_string();
        // What every executor must see: the plan's inputs, and the folders made for the job
        // (the ledger's, made here, and the rejects folders that are elsewhere) unless each
        // task keeps its books on its own machine.
        let made: Vec<std::path::PathBuf> = match remote_books {
            Some(_) => Vec::new(),
            None => {
                std::fs::create_dir_all(ledger_dir)?;
                std::iter::once(ledger_dir.to_path_buf())
                    .chain(
                        dirs.values()
                            .map(std::path::PathBuf::from)
                            .filter(|d| !d.starts_with(ledger_dir) && d.is_dir()),
                    )
                    .collect()
            }
        };
        o.reach = serde_json::to_string(&reach::Reach::of(&plan, made))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
    }
    let config = config.upgrade_for_ballista();
    let ballista = config.ballista_config();
    let session = uuid::Uuid::new_v4().to_string();
    ballista_core::execution_plans::execute_physical_plan::<PhysicalPlanNode>(
        format!("http://{}:{}", scheduler.host, scheduler.port),
        &ballista,
        plan,
        codec().as_ref(),
        session,
        config,
    )
    .await
}

/// The line sluice itself wrote for a job that failed on the cluster (a bad row, a failed
/// API call, a broken file), taken out of Ballista's report of the failed task, which
/// carries the executor's error only as its debug text; `None` when the failure was not one
/// of sluice's.
pub fn job_error(e: &datafusion::error::DataFusionError) -> Option<String> {
    let text = e.to_string();
    for marker in [
        "BadRow(\"",
        "Api(\"",
        "Unreachable(\"",
        "File { file: \"",
        "Config(\"",
    ] {
        let Some(at) = text.find(marker) else {
            continue;
        };
        let (body, _) = debug_string(&text[at + marker.len()..])?;
        if marker.starts_with("File") {
            let rest = &text[at + marker.len()..];
            let after = rest.find("reason: \"")?;
            let (reason, _) = debug_string(&rest[after + "reason: \"".len()..])?;
            return Some(format!("{body}: {reason}"));
        }
        return Some(body);
    }
    None
}

/// The string a Rust debug literal starts with (its opening quote already taken), and the
/// text after its closing quote.
fn debug_string(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '0' => out.push('\0'),
                'u' => {
                    let rest = &s[chars.next()?.0 + 1..];
                    let end = rest.find('}')?;
                    out.push(char::from_u32(u32::from_str_radix(&rest[..end], 16).ok()?)?);
                    for _ in 0..=end {
                        chars.next();
                    }
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// Reads what the tasks of a job run by [`execute`] counted and rejected (their ledgers in
/// `ledger_dir`) into the books of the session made with `config`; returns what the plan's
/// nodes did to the rows, over all tasks. The enrich stages' reports are kept among the
/// session's services ([`Services::cluster_reports`]).
pub fn absorb(
    config: &SessionConfig,
    ledger_dir: &std::path::Path,
) -> crate::error::Result<crate::ledger::PlanFlow> {
    let services = Services::of(config)?;
    let books = services
        .all_books()
        .into_iter()
        .map(|r| (r.id(), r))
        .collect();
    let absorbed = crate::ledger::remote::absorb(ledger_dir, &books)?;
    services.keep_cluster_reports(absorbed.stage_reports);
    Ok(absorbed.flow)
}

/// Lets the executors of jobs planned in `ctx` open the stores of `options` — with the
/// options that are not secrets ([`stores::shareable`]) and their own credentials.
pub fn share_storage(
    ctx: &datafusion::prelude::SessionContext,
    options: &crate::storage::stores::StorageOptions,
) -> crate::error::Result<()> {
    let shared = serde_json::to_string(&stores::shareable(options))
        .map_err(|e| crate::error::Error::Config(e.to_string()))?;
    let state = ctx.state_ref();
    let mut state = state.write();
    if let Some(o) = state
        .config_mut()
        .options_mut()
        .extensions
        .get_mut::<crate::services::SluiceOptions>()
    {
        o.storage = shared;
    }
    Ok(())
}

fn cluster_error(e: ballista_core::error::BallistaError) -> crate::error::Error {
    crate::error::Error::Cluster(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_job_gives_back_sluice_s_own_line() {
        let e = datafusion::error::DataFusionError::Execution(
            r#"Job 1 failed: Task failed due to runtime execution error: DataFusionError(Shared(External(DataFusionError(External(BadRow("in/a \"b\"/ü\u{7}.csv:3: expected 3 fields, found 4 (byte 17, too_many_fields)"))))))"#.into(),
        );
        assert_eq!(
            job_error(&e).as_deref(),
            Some("in/a \"b\"/ü\u{7}.csv:3: expected 3 fields, found 4 (byte 17, too_many_fields)")
        );
        let e = datafusion::error::DataFusionError::Execution(
            r#"failed: External(File { file: "x.parquet", reason: "cut off" })"#.into(),
        );
        assert_eq!(job_error(&e).as_deref(), Some("x.parquet: cut off"));
        let e = datafusion::error::DataFusionError::Execution("no executor".into());
        assert_eq!(job_error(&e), None);
    }

    #[test]
    fn scheduler_urls_read_with_or_without_the_scheme() {
        let url: SchedulerUrl = "df://127.0.0.1:50050".parse().expect("url");
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 50050));
        let url: SchedulerUrl = "sched.local:1".parse().expect("url");
        assert_eq!(url.to_string(), "df://sched.local:1");
        for bad in ["df://", "df://host", "host:port", ":50050"] {
            assert!(bad.parse::<SchedulerUrl>().is_err(), "{bad}");
        }
    }
}
