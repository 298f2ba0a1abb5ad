//! `sluice explain`: the plan of a job, in terms a user can act on — the input files and how
//! they are split into partitions, each stage with its kind of parallelism, the output
//! layout, and warnings. Nothing is written and no API is called; the inputs' schemas are
//! sampled, lookups are loaded (to tell their size) and the partition column is sampled.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use serde::Serialize;

use crate::context;
use crate::enrich::{Concurrency, Enricher};
use crate::error::Result;
use crate::job::{Job, Stage};
use crate::lookup::DEFAULT_MAX_LOOKUP_BYTES;
use crate::source::csv_scan::CsvScanExec;
use crate::source::file_scan::FileByFileExec;
use crate::source::{Compression, Source};

/// Rows sampled to estimate the values of a `partition_by` column.
const PARTITION_SAMPLE_ROWS: usize = 100_000;
/// More distinct `partition_by` values than this in the sample is a warning.
const MANY_PARTITIONS: u64 = 1000;

/// The plan of a job.
#[derive(Debug, Clone, Serialize)]
pub struct Explain {
    /// The input files and their partitions.
    pub inputs: Inputs,
    /// The columns read, `name TYPE`.
    pub schema: Vec<String>,
    /// Widening decisions taken when merging the files' schemas.
    pub schema_decisions: Vec<String>,
    /// The stages, in order.
    pub stages: Vec<StagePlan>,
    /// The output.
    pub output: Output,
    /// Things worth changing.
    pub warnings: Vec<String>,
    /// On a cluster: the stages Ballista's planner cuts the plan into, in the order they
    /// run (planned here, as the scheduler would; the cluster is not contacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Vec<ClusterStage>>,
    /// With `--analyze`: what the run of the job did (see [`Explain::add_run`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunMeasured>,
}

/// What a run of the job did, beside its plan (`sluice explain --analyze`).
#[derive(Debug, Clone, Serialize)]
pub struct RunMeasured {
    /// Wall-clock seconds of the whole job.
    pub seconds: f64,
    /// Records in the inputs.
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Rows rejected (unreadable, failed enrich calls, unplaceable at the write).
    pub rows_rejected: u64,
    /// Rows dropped (`on_error = "skip"`).
    pub rows_skipped: u64,
    /// Rows the SQL removed.
    pub rows_removed_by_sql: u64,
    /// Rows the SQL added.
    pub rows_added_by_sql: u64,
    /// Output files written.
    pub files_written: u64,
    /// Their bytes.
    pub bytes_written: u64,
}

/// One stage of a job on a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStage {
    /// Its id in the job.
    pub id: usize,
    /// Tasks: one per partition it runs.
    pub tasks: usize,
    /// The stages whose output it reads.
    pub reads_stages: Vec<usize>,
    /// What runs in it, top down (the shuffle writer left out).
    pub nodes: Vec<String>,
    /// How its output is partitioned for the stages that read it (`Hash([key@0], 4)`), when
    /// it repartitions.
    pub output: Option<String>,
}

/// A database read as planned.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseRead {
    /// The URL without its password, then the table or `(query)`.
    pub read: String,
    /// Rows in the snapshot the partitions read.
    pub rows: u64,
    /// Each partition's condition (`all rows` for a read in one piece).
    pub partitions: Vec<String>,
}

/// The inputs of a job.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    /// Files read.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Partitions the scan produces (byte ranges of big files count one each).
    pub partitions: usize,
    /// Threads the job runs on.
    pub threads: usize,
    /// A database read instead of files: what it reads (its URL without the password),
    /// the rows in its snapshot and each partition's range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseRead>,
    /// Each file (the first 50).
    pub list: Vec<InputPlan>,
    /// Files not listed.
    pub more: usize,
}

/// One input file.
#[derive(Debug, Clone, Serialize)]
pub struct InputPlan {
    /// The file.
    pub file: String,
    /// `csv`, `ndjson`, `parquet`, `orc`.
    pub format: String,
    /// `gzip`, `zstd`... or none.
    pub compression: Option<String>,
    /// Size in bytes.
    pub bytes: u64,
    /// Partitions reading it: 1 = whole, more = split into ranges.
    pub ranges: usize,
    /// Why it is read whole, when it is big enough to split but is not.
    pub whole_because: Option<String>,
    /// A CSV file's dialect, as detected or given (`';' delimited, header`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dialect: Option<String>,
}

/// One stage.
#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    /// `sql`, `lookup`, `enrich` or `batches`.
    pub kind: String,
    /// The stage's name (SQL steps without one are `transform #N`).
    pub name: String,
    /// How it runs in parallel.
    pub parallelism: String,
    /// Settings worth seeing.
    pub details: BTreeMap<String, String>,
    /// With `--analyze`, an enrich stage's run: keys, calls, latency and what its requests
    /// waited for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrich: Option<crate::enrich::EnrichReport>,
    /// With `--analyze`, a lookup's run: rows matched and missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookup: Option<crate::lookup::LookupReport>,
}

/// Where the output goes.
#[derive(Debug, Clone, Serialize)]
pub struct Output {
    /// The path.
    pub path: String,
    /// The format.
    pub format: String,
    /// How many files, and why.
    pub files: String,
    /// Hive partition columns.
    pub partition_by: Vec<String>,
    /// `error`, `overwrite` or `append`.
    pub mode: String,
    /// Columns written, `name TYPE`.
    pub columns: Vec<String>,
}

/// Plans `job` without running it.
pub async fn explain(job: &Job) -> Result<Explain> {
    let threads = job.threads.max(1);
    let ctx = match &job.cluster {
        Some(_) => crate::cluster::client_session(threads, job.source.split_min_size),
        None => context::session_with(threads, job.source.split_min_size),
    };
    for udf in &job.udfs {
        ctx.register_udf(udf.clone());
    }
    let source = Source::open(&ctx, job.source.clone()).await?;
    // Sampling the partition column may meet bad rows: their records go to a scratch
    // folder, removed at the end (explain writes nothing).
    let scratch = tempfile::Builder::new()
        .prefix("sluice-explain-")
        .tempdir()
        .map_err(|e| crate::error::Error::io(std::env::temp_dir().display().to_string(), e))?;
    source.rejects.set_dir(scratch.path().to_path_buf());
    let df = if crate::job::rows_need_origin(&job.stages) {
        source.to_dataframe_with_origin(&ctx)?
    } else {
        source.to_dataframe(&ctx)?
    };
    let scan = df.clone().create_physical_plan().await?;
    let mut ranges: BTreeMap<String, usize> = BTreeMap::new();
    collect_ranges(&scan, &mut ranges);
    let partitions = crate::report::scan_partitions(&scan);
    let unsplit = source.unsplit.lock().map(|u| u.clone()).unwrap_or_default();
    let split_min = job.source.split_min_size.unwrap_or(1 << 20) as u64;

    let mut warnings = Vec::new();
    let list: Vec<InputPlan> = source
        .files
        .iter()
        .map(|f| {
            let n = ranges.get(&f.input.display).copied().unwrap_or(1);
            let compressed = f.input.compression != Compression::None;
            let whole_because = if n > 1 || f.input.size < split_min || partitions < 2 {
                None
            } else if compressed {
                Some("compressed: cannot be split".to_string())
            } else if unsplit.contains(&f.input.display) {
                Some("no safe record boundary near a cut".to_string())
            } else {
                None
            };
            // A compressed file bigger than a thread's share keeps one thread busy alone.
            let share = source.total_bytes() / threads as u64;
            if compressed && threads > 1 && f.input.size >= split_min && f.input.size > share {
                warnings.push(format!(
                    "{} is {} compressed and cannot be split: one thread reads it while the others wait; store big files uncompressed or as several files",
                    f.input.display,
                    human_bytes(f.input.size)
                ));
            }
            if let Some(doubt) = f.dialect.as_ref().and_then(|d| d.doubt.as_ref()) {
                warnings.push(format!(
                    "{}: its dialect is a guess ({doubt}): give --delimiter, --header or --no-header if it is wrong",
                    f.input.display
                ));
            }
            InputPlan {
                file: f.input.display.clone(),
                format: f.input.format.to_string(),
                compression: compressed.then(|| f.input.compression.to_string()),
                bytes: f.input.size,
                ranges: n,
                whole_because,
                dialect: f.dialect.as_ref().map(|d| d.describe()),
            }
        })
        .collect();
    let more = list.len().saturating_sub(50);
    let list: Vec<InputPlan> = list.into_iter().take(50).collect();

    // Partition columns with many values make many folders of small files.
    for col in &job.sink.partition_by {
        if source.schema.index_of(col).is_err() {
            continue;
        }
        ctx.register_table("__sluice_explain", df.clone().into_view())?;
        let sql = format!(
            "SELECT approx_distinct(\"{c}\") AS n FROM (SELECT \"{c}\" FROM __sluice_explain LIMIT {PARTITION_SAMPLE_ROWS})",
            c = col.replace('"', "\"\"")
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        ctx.deregister_table("__sluice_explain")?;
        let n = batches
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                    .map(|a| a.value(0))
            })
            .unwrap_or(0);
        if n > MANY_PARTITIONS {
            warnings.push(format!(
                "partition_by '{col}' has about {n} distinct values in the first {PARTITION_SAMPLE_ROWS} rows: that many folders, each with its own small files; partition by a coarser column"
            ));
        }
    }

    let applied = crate::job::apply_stages_spread(
        &ctx,
        df,
        &job.stages,
        &source.rejects,
        job.cluster.is_some(),
    )
    .await?;
    let plan = applied.df.clone().create_physical_plan().await?;
    let cluster = match &job.cluster {
        Some(_) => {
            // The stages of the job as it would run: the write included (one file is one
            // task; a partitioned output is hash-partitioned first).
            let write =
                crate::sink::plan_for_explain(applied.df.clone(), &job.sink, threads).await?;
            Some(cluster_stages(write, &ctx.copied_config())?)
        }
        None => None,
    };
    let cpu = format!(
        "CPU: {} partitions on {threads} threads",
        plan.properties()
            .output_partitioning()
            .partition_count()
            .max(1)
    );
    let mut stages = Vec::new();
    let (mut lookups, mut enrichers) = (applied.lookups.iter(), applied.enrichers.iter());
    let mut sql_steps = 0;
    for stage in &job.stages {
        let mut details = BTreeMap::new();
        let (kind, name, parallelism) = match stage {
            Stage::Sql(t) => {
                sql_steps += 1;
                details.insert("sql".into(), one_line(&t.sql));
                let name = t
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("transform #{sql_steps}"));
                ("sql", name, cpu.clone())
            }
            Stage::Lookup(spec) => {
                let l = lookups.next().map(|l| l.report(&Default::default()));
                let (rows, memory, peak) = l
                    .map(|l| (l.rows, l.memory_bytes, l.peak_bytes))
                    .unwrap_or((0, 0, 0));
                let max = spec.max_lookup_bytes.unwrap_or(DEFAULT_MAX_LOOKUP_BYTES);
                if peak * 5 > max * 4 {
                    warnings.push(format!(
                        "lookup '{}' takes {} while loading, near its max_lookup_bytes ({}): as it grows, join it in SQL instead",
                        spec.name,
                        human_bytes(peak),
                        human_bytes(max)
                    ));
                }
                let on: Vec<String> = spec
                    .on
                    .iter()
                    .map(|k| {
                        if k.left == k.right {
                            k.left.clone()
                        } else {
                            format!("{}={}", k.left, k.right)
                        }
                    })
                    .collect();
                details.insert("on".into(), on.join(", "));
                details.insert(
                    "how".into(),
                    spec.how.clone().unwrap_or_else(|| "left".into()),
                );
                details.insert(
                    "on_missing".into(),
                    spec.on_missing.clone().unwrap_or_else(|| "null".into()),
                );
                (
                    "lookup",
                    spec.name.clone(),
                    format!(
                        "broadcast: {rows} rows ({}) loaded once, shared by every partition",
                        human_bytes(memory)
                    ),
                )
            }
            Stage::Enrich(spec) => {
                let e: Option<&Arc<Enricher>> = enrichers.next();
                let url = e.map(|e| e.url_shown()).unwrap_or_default();
                let method = e.map(|e| e.method().to_string()).unwrap_or_default();
                let concurrency = match spec.concurrency.unwrap_or(Concurrency::Fixed(16)) {
                    Concurrency::Fixed(n) => format!("at most {n}"),
                    Concurrency::Auto => format!(
                        "adaptive (AIMD), at most {}",
                        spec.max_concurrency.unwrap_or(256)
                    ),
                };
                details.insert("request".into(), format!("{method} {url}"));
                details.insert("retries".into(), spec.retries.unwrap_or(3).to_string());
                details.insert(
                    "on_error".into(),
                    spec.on_error.clone().unwrap_or_else(|| "reject".into()),
                );
                if let Some(r) = &spec.rate_limit {
                    details.insert("rate_limit".into(), r.clone());
                }
                if let Some(c) = &spec.cache {
                    details.insert("cache".into(), c.clone());
                }
                if let Some(b) = &spec.batch {
                    details.insert("batch".into(), format!("{} keys per POST", b.size));
                }
                (
                    "enrich",
                    spec.name.clone(),
                    format!("async I/O: {concurrency} requests in flight, one per distinct key"),
                )
            }
            Stage::Batches(f) => ("batches", f.name.clone(), format!("{cpu} (your function)")),
        };
        stages.push(StagePlan {
            kind: kind.into(),
            name,
            parallelism,
            details,
            enrich: None,
            lookup: None,
        });
    }

    let sink = &job.sink;
    let single = sink.single_file_target();
    let files = if single {
        "1 (a single file)".to_string()
    } else if let Some(n) = sink.files {
        if sink.partition_by.is_empty() {
            format!("{n}")
        } else {
            format!("{n} per partition folder")
        }
    } else if !sink.partition_by.is_empty() {
        "1 per partition folder".to_string()
    } else {
        format!("up to {threads} (one per thread that gets rows)")
    };
    let columns = columns_of(applied.df.schema().as_arrow());
    Ok(Explain {
        inputs: Inputs {
            files: source.files.len(),
            bytes: source.total_bytes(),
            partitions,
            threads,
            database: source.database.as_ref().map(|r| DatabaseRead {
                read: r.display.clone(),
                rows: r.rows,
                partitions: r
                    .partitions
                    .iter()
                    .map(|p| p.clone().unwrap_or_else(|| "all rows".into()))
                    .collect(),
            }),
            list,
            more,
        },
        schema: columns_of(&source.output_schema()),
        schema_decisions: source.decisions.clone(),
        stages,
        output: Output {
            path: sink.shown(),
            format: sink.resolved_format().to_string(),
            files,
            partition_by: sink.partition_by.clone(),
            mode: format!("{:?}", sink.mode).to_lowercase(),
            columns,
        },
        warnings,
        cluster,
        run: None,
    })
}

impl Explain {
    /// Adds what a run of the job did (`report`, from [`Job::run`]) to its plan: the
    /// rows and time of the whole job, and each enrich stage's and lookup's figures under
    /// that stage — for an enrich stage, the wall time its requests spent waiting on the
    /// concurrency limit, the rate limit and `Retry-After`.
    pub fn add_run(&mut self, report: &crate::Report) {
        for stage in &mut self.stages {
            match stage.kind.as_str() {
                "enrich" => {
                    stage.enrich = report.enrich.iter().find(|e| e.name == stage.name).cloned()
                }
                "lookup" => {
                    stage.lookup = report
                        .lookups
                        .iter()
                        .find(|l| l.name == stage.name)
                        .cloned()
                }
                _ => {}
            }
        }
        self.run = Some(RunMeasured {
            seconds: report.seconds,
            rows_in: report.rows_in,
            rows_out: report.rows_out,
            rows_rejected: report.rows_rejected,
            rows_skipped: report.rows_skipped,
            rows_removed_by_sql: report.rows_removed_by_sql,
            rows_added_by_sql: report.rows_added_by_sql,
            files_written: report.files_written,
            bytes_written: report.bytes_written,
        });
    }
}

/// The stages Ballista's planner cuts `plan` into, as a cluster job would run it.
fn cluster_stages(
    plan: Arc<dyn ExecutionPlan>,
    config: &datafusion::prelude::SessionConfig,
) -> Result<Vec<ClusterStage>> {
    use ballista_scheduler::planner::{DefaultDistributedPlanner, DistributedPlanner};
    let plan = crate::cluster::for_cluster(plan)?;
    let job: ballista_core::JobId = "explain".to_string().into();
    let stages = DefaultDistributedPlanner::new()
        .plan_query_stages(&job, plan, config.options())
        .map_err(|e| crate::error::Error::Cluster(e.to_string()))?;
    Ok(stages
        .iter()
        .map(|s| {
            let mut nodes = Vec::new();
            let mut reads = Vec::new();
            let mut todo: Vec<&Arc<dyn ExecutionPlan>> = s.children();
            while let Some(node) = todo.pop() {
                if let Some(u) =
                    node.downcast_ref::<ballista_core::execution_plans::UnresolvedShuffleExec>()
                {
                    reads.push(u.stage_id);
                } else if !["CoalesceBatchesExec", "CooperativeExec"].contains(&node.name()) {
                    nodes.push(
                        datafusion::physical_plan::displayable(node.as_ref())
                            .one_line()
                            .to_string()
                            .trim()
                            .to_string(),
                    );
                }
                todo.extend(node.children().into_iter().rev());
            }
            reads.sort_unstable();
            ClusterStage {
                id: s.stage_id(),
                tasks: s.input_partition_count(),
                reads_stages: reads,
                nodes,
                output: s.shuffle_output_partitioning().map(|p| p.to_string()),
            }
        })
        .collect())
}

fn collect_ranges(plan: &Arc<dyn ExecutionPlan>, out: &mut BTreeMap<String, usize>) {
    if let Some(csv) = plan.downcast_ref::<CsvScanExec>() {
        for (file, ..) in csv.ranges() {
            *out.entry(file).or_default() += 1;
        }
        return;
    }
    if let Some(f) = plan.downcast_ref::<FileByFileExec>() {
        for (file, _) in f.parts() {
            *out.entry(file).or_default() += 1;
        }
        return;
    }
    for child in plan.children() {
        collect_ranges(child, out);
    }
}

/// `name TYPE` of every column.
fn columns_of(schema: &datafusion::arrow::datatypes::Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f.name(),
                crate::source::merge::type_name(f.data_type())
            )
        })
        .collect()
}

fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `907 B`, `1.5 KiB`, `12.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl fmt::Display for Explain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inputs;
        if let Some(db) = &i.database {
            writeln!(
                f,
                "inputs: {} ({} rows in its snapshot) -> {} partitions on {} threads",
                db.read,
                db.rows,
                db.partitions.len(),
                i.threads
            )?;
            for p in &db.partitions {
                writeln!(f, "  {p}")?;
            }
        } else {
            writeln!(
                f,
                "inputs: {} files, {} -> {} partitions on {} threads",
                i.files,
                human_bytes(i.bytes),
                i.partitions,
                i.threads
            )?;
        }
        let width = i.list.iter().map(|p| p.file.len()).max().unwrap_or(0);
        for p in &i.list {
            let format = match &p.compression {
                Some(c) => format!("{} ({c})", p.format),
                None => p.format.clone(),
            };
            let mut how = match (p.ranges, &p.whole_because) {
                (1, None) => "whole".to_string(),
                (1, Some(why)) => format!("whole ({why})"),
                (n, _) => format!("{n} ranges"),
            };
            if let Some(d) = &p.dialect {
                how.push_str(&format!("; {d}"));
            }
            writeln!(
                f,
                "  {:width$}  {:14} {:>10}  {how}",
                p.file,
                format,
                human_bytes(p.bytes)
            )?;
        }
        if i.more > 0 {
            writeln!(f, "  ... and {} more", i.more)?;
        }
        writeln!(f, "schema: {}", self.schema.join(", "))?;
        for d in &self.schema_decisions {
            writeln!(f, "  widened: {d}")?;
        }
        writeln!(f, "stages:")?;
        if self.stages.is_empty() {
            writeln!(f, "  (none: rows go straight to the output)")?;
        }
        for (n, s) in self.stages.iter().enumerate() {
            writeln!(f, "  {}. {} '{}': {}", n + 1, s.kind, s.name, s.parallelism)?;
            for (k, v) in &s.details {
                writeln!(f, "       {k}: {v}")?;
            }
            if let Some(e) = &s.enrich {
                writeln!(
                    f,
                    "       run: {} rows, {} keys ({} cached), {} calls ({} retries), {} failed keys; p50 {:.0} ms; calling for {:.2} s, at most {} in flight",
                    e.rows,
                    e.distinct_keys,
                    e.cache_hits,
                    e.calls,
                    e.retries,
                    e.failed_keys,
                    e.latency_ms_p50,
                    e.calling_s,
                    e.max_in_flight
                )?;
                if let Some(waits) = e.waits_line() {
                    writeln!(f, "       {waits}")?;
                }
            }
            if let Some(l) = &s.lookup {
                writeln!(
                    f,
                    "       run: {} rows matched, {} missing",
                    l.matched, l.missing
                )?;
            }
        }
        let o = &self.output;
        write!(f, "output: {} ({}", o.path, o.format)?;
        if !o.partition_by.is_empty() {
            write!(f, ", partitioned by {}", o.partition_by.join(", "))?;
        }
        writeln!(f, "), files: {}, mode: {}", o.files, o.mode)?;
        writeln!(f, "  columns: {}", o.columns.join(", "))?;
        if let Some(r) = &self.run {
            let mut also = String::new();
            for (n, what) in [
                (r.rows_skipped, "skipped"),
                (r.rows_removed_by_sql, "removed by SQL"),
                (r.rows_added_by_sql, "added by SQL"),
            ] {
                if n > 0 {
                    also.push_str(&format!(", {n} {what}"));
                }
            }
            writeln!(
                f,
                "run: {:.2} s; {} rows in, {} out, {} rejected{also}; {} file{} written ({})",
                r.seconds,
                r.rows_in,
                r.rows_out,
                r.rows_rejected,
                r.files_written,
                if r.files_written == 1 { "" } else { "s" },
                human_bytes(r.bytes_written)
            )?;
        }
        if let Some(stages) = &self.cluster {
            writeln!(f, "on the cluster: {} stages", stages.len())?;
            for s in stages {
                let reads = if s.reads_stages.is_empty() {
                    String::new()
                } else {
                    let ids: Vec<String> = s.reads_stages.iter().map(|i| i.to_string()).collect();
                    format!(", reads stages {}", ids.join(", "))
                };
                let out = match &s.output {
                    Some(p) => format!(", output {p}"),
                    None => String::new(),
                };
                writeln!(f, "  stage {}: {} tasks{reads}{out}", s.id, s.tasks)?;
                for n in &s.nodes {
                    writeln!(f, "    {n}")?;
                }
            }
        }
        if !self.warnings.is_empty() {
            writeln!(f, "warnings:")?;
            for w in &self.warnings {
                writeln!(f, "  - {w}")?;
            }
        }
        Ok(())
    }
}
