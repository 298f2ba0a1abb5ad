//! The library API: a pipeline built in code with SQL, a lookup, a scalar function and a
//! batch function, run on real files.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sluice::datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use sluice::datafusion::arrow::datatypes::{DataType, Field, Schema};
use sluice::datafusion::common::cast::as_int64_array;
use sluice::datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use sluice::lookup::{KeyPair, LookupSpec};
use sluice::{Pipeline, ReadOptions, SinkOptions};

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

/// Adds `doubled = n * 2` to a batch.
fn doubled(batch: RecordBatch) -> sluice::datafusion::error::Result<RecordBatch> {
    let n = batch.column_by_name("n").expect("n");
    let n = as_int64_array(n)?;
    let d: Int64Array = n.iter().map(|v| v.map(|v| v * 2)).collect();
    let mut fields = batch.schema().fields().to_vec();
    fields.push(Arc::new(Field::new("doubled", DataType::Int64, true)));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(d));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// A lookup of `cats` on `cat`, then the batch function `doubled`.
fn lookup_then_doubled(cats: String) -> [sluice::Stage; 2] {
    [
        sluice::Stage::Lookup(Box::new(LookupSpec {
            name: "cats".into(),
            paths: vec![cats],
            on: vec![KeyPair::same("cat")],
            ..LookupSpec::default()
        })),
        sluice::Stage::Batches(sluice::BatchFn {
            name: "doubled".into(),
            f: Arc::new(doubled),
        }),
    ]
}

/// `options` read in `ctx`, then `stages` applied: the read (for its books) and the result.
async fn read_then(
    ctx: &sluice::datafusion::prelude::SessionContext,
    options: ReadOptions,
    stages: &[sluice::Stage],
) -> (sluice::Source, sluice::job::Applied) {
    let source = sluice::Source::open(ctx, options).await.expect("open");
    let df = if sluice::job::rows_need_origin(stages) {
        source.to_dataframe_with_origin(ctx)
    } else {
        source.to_dataframe(ctx)
    };
    let applied = sluice::job::apply_stages(ctx, df.expect("df"), stages, &source.rejects)
        .await
        .expect("stages");
    (source, applied)
}

/// A fresh session that knows `books` and the batch function `doubled` (by name), and
/// nothing else of the job: what another process would build from the job's configuration.
fn fresh_session(
    books: &Arc<sluice::ledger::rejects::Rejects>,
) -> (
    sluice::datafusion::prelude::SessionContext,
    Arc<sluice::services::Services>,
) {
    let ctx = sluice::context::session(2);
    let services = sluice::services::Services::of(&ctx.copied_config()).expect("services");
    services.keep_books(books);
    services
        .register_function(&sluice::BatchFn {
            name: "doubled".into(),
            f: Arc::new(doubled),
        })
        .expect("register");
    (ctx, services)
}

/// The rows of `batches` as table lines, sorted (partitions finish in any order).
fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut lines: Vec<String> =
        sluice::datafusion::arrow::util::pretty::pretty_format_batches(batches)
            .expect("format")
            .to_string()
            .lines()
            .skip(3)
            .filter(|l| !l.starts_with('+'))
            .map(str::to_string)
            .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_lookup_udf_and_batch_function_in_code() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = write(dir.path(), "data.csv", "n,cat\n1,a\n2,b\n3,a\n4,c\n");
    let cats = write(dir.path(), "cats.csv", "cat,label\na,Alpha\nb,Beta\n");
    let plus_one = create_udf(
        "plus_one",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let args = ColumnarValue::values_to_arrays(args)?;
            let a = as_int64_array(&args[0])?;
            let out: Int64Array = a.iter().map(|v| v.map(|v| v + 1)).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    );
    let out = dir.path().join("out.csv").display().to_string();
    let report = Pipeline::read([data])
        .lookup(LookupSpec {
            name: "cats".into(),
            paths: vec![cats],
            on: vec![KeyPair::same("cat")],
            ..LookupSpec::default()
        })
        .udf(plus_one)
        .sql("SELECT n, plus_one(n) AS m, label FROM source WHERE n < 4")
        .map_batches("doubled", doubled)
        .sql("SELECT * FROM source ORDER BY n")
        .write(SinkOptions {
            path: out.clone(),
            ..SinkOptions::default()
        })
        .threads(2)
        .run()
        .await
        .expect("run");
    assert_eq!(report.rows_in, 4);
    assert_eq!(report.rows_out, 3);
    assert_eq!(report.rows_removed_by_sql, 1);
    assert_eq!(report.lookups[0].matched, 3);
    let text = std::fs::read_to_string(&out).expect("out");
    assert_eq!(
        text,
        "n,m,label,doubled\n1,2,Alpha,2\n2,3,Beta,4\n3,4,Alpha,6\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_functions_run_on_partitions_in_parallel() {
    let dir = tempfile::tempdir().expect("tmp");
    // Two columns: a one-column CSV cannot be cut safely and is read whole.
    let mut text = String::from("n,tag\n");
    for i in 0..200_000 {
        text.push_str(&format!("{i},t{}\n", i % 7));
    }
    let data = write(dir.path(), "big.csv", &text);
    let (now, peak, calls) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (n2, p2, c2) = (Arc::clone(&now), Arc::clone(&peak), Arc::clone(&calls));
    let report = Pipeline::read_with(ReadOptions {
        paths: vec![data],
        split_min_size: Some(64 * 1024),
        ..ReadOptions::default()
    })
    .map_batches("slow", move |batch: RecordBatch| {
        let at = n2.fetch_add(1, Ordering::SeqCst) + 1;
        p2.fetch_max(at, Ordering::SeqCst);
        c2.fetch_add(1, Ordering::SeqCst);
        if batch.num_rows() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        n2.fetch_sub(1, Ordering::SeqCst);
        doubled(batch)
    })
    .threads(2)
    .write(SinkOptions {
        path: dir.path().join("out").display().to_string(),
        ..SinkOptions::default()
    })
    .run()
    .await
    .expect("run");
    assert_eq!(report.rows_out, 200_000);
    assert!(report.input_partitions >= 2, "{}", report.input_partitions);
    assert!(calls.load(Ordering::SeqCst) > 4);
    assert!(
        peak.load(Ordering::SeqCst) >= 2,
        "the function never ran on two partitions at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_function_that_changes_its_columns_is_an_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = write(dir.path(), "data.csv", "n\n1\n2\n");
    let err = Pipeline::read([data])
        .map_batches("shifty", |batch: RecordBatch| {
            if batch.num_rows() == 0 {
                return Ok(batch);
            }
            doubled(batch)
        })
        .write(SinkOptions {
            path: dir.path().join("out").display().to_string(),
            ..SinkOptions::default()
        })
        .run()
        .await
        .expect_err("schema changed");
    let msg = err.to_string();
    assert!(
        msg.contains("batch function 'shifty' returned other columns"),
        "{msg}"
    );
    assert!(!dir.path().join("out").exists());
}

// regression: a batch function ran on the async runtime's worker, so a function that
// blocks (a sync HTTP call, a long computation) stalled every other task on that worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_blocking_batch_function_leaves_the_runtime_free() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = write(dir.path(), "data.csv", "n\n1\n2\n3\n");
    // A task on the same (single) worker notes the longest gap between its ticks.
    let longest = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (longest, stop) = (Arc::clone(&longest), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut last = std::time::Instant::now();
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let gap = last.elapsed().as_millis() as usize;
                longest.fetch_max(gap, Ordering::SeqCst);
                last = std::time::Instant::now();
            }
        })
    };
    let report = Pipeline::read([data])
        .map_batches("blocking", |batch: RecordBatch| {
            if batch.num_rows() > 0 {
                // Blocks its thread, as sync client code does.
                std::thread::sleep(std::time::Duration::from_millis(1500));
            }
            Ok(batch)
        })
        .threads(1)
        .write(SinkOptions {
            path: dir.path().join("out").display().to_string(),
            ..SinkOptions::default()
        })
        .run()
        .await
        .expect("run");
    stop.store(true, Ordering::SeqCst);
    ticker.await.expect("ticker");
    assert_eq!(report.rows_out, 3);
    let gap = longest.load(Ordering::SeqCst);
    assert!(
        gap < 1000,
        "the runtime's only worker was held for {gap} ms by the batch function"
    );
}

/// The physical plan of a pipeline with a lookup and a batch function holds configuration
/// only: run in a fresh session — whose services have never seen its stages, with each
/// stage node rebuilt from its spec's JSON text and the function registered there by name —
/// it gives the same rows; without the function registered it fails naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_runs_from_its_configuration_in_a_fresh_session() {
    use sluice::datafusion::common::tree_node::{Transformed, TreeNode};
    use sluice::datafusion::physical_plan::{collect, ExecutionPlan};
    use sluice::services::Services;
    use sluice::stage::MapExec;
    use sluice::stage_spec::StageSpec;

    let dir = tempfile::tempdir().expect("tmp");
    let data = write(dir.path(), "da ta #1.csv", "n,cat\n1,a\n2,b\n3,a\n4,c\n");
    let cats = write(dir.path(), "cäts ~%.csv", "cat,label\na,Alpha\nb,Beta\n");
    let stages = lookup_then_doubled(cats);
    let here = sluice::context::session(2);
    let options = ReadOptions {
        paths: vec![data],
        ..ReadOptions::default()
    };
    let (source, applied) = read_then(&here, options, &stages).await;
    let plan = applied
        .df
        .create_physical_plan()
        .await
        .expect("physical plan");
    let expected = sorted_rows(
        &collect(Arc::clone(&plan), here.task_ctx())
            .await
            .expect("run here"),
    );
    assert_eq!(expected.len(), 4, "{expected:?}");
    assert!(expected.iter().any(|r| r.contains("Alpha")), "{expected:?}");

    // Every stage node again, from nothing but its spec's JSON text (in a new physical
    // plan each time: a plan's repartition nodes run once).
    let rebuild = async || {
        let mut ids = Vec::new();
        let plan = applied
            .df
            .clone()
            .create_physical_plan()
            .await
            .expect("plan");
        let plan = plan
            .transform_up(|node| {
                let Some(map) = node.downcast_ref::<MapExec>() else {
                    return Ok(Transformed::no(node));
                };
                let text = map.spec().to_json().expect("spec as JSON");
                ids.push(map.stage());
                let again = MapExec::new(
                    Arc::clone(map.children()[0]),
                    map.stage(),
                    StageSpec::from_json(&text).expect("spec from JSON"),
                    map.describe().to_string(),
                    map.schema(),
                );
                Ok(Transformed::yes(Arc::new(again) as Arc<dyn ExecutionPlan>))
            })
            .expect("rebuild");
        (plan.data, ids)
    };
    let (rebuilt, ids) = rebuild().await;
    assert_eq!(ids.len(), 2, "a lookup node and a function node");

    // A fresh session: the job's books, the function by name, no stage.
    let fresh = sluice::context::session(2);
    let services = Services::of(&fresh.copied_config()).expect("services");
    services.keep_books(&source.rejects);
    for id in &ids {
        assert!(
            services.stage(*id).is_err(),
            "the fresh session has no stage yet"
        );
    }
    let unregistered = collect(rebuilt, fresh.task_ctx())
        .await
        .expect_err("no function registered");
    assert!(
        unregistered
            .to_string()
            .contains("no batch function 'doubled' is registered"),
        "{unregistered}"
    );
    let (fresh, services) = fresh_session(&source.rejects);
    let there = sorted_rows(
        &collect(rebuild().await.0, fresh.task_ctx())
            .await
            .expect("run there"),
    );
    assert_eq!(there, expected);
    for id in &ids {
        assert!(services.stage(*id).is_ok(), "built there from its spec");
    }
}

/// A partition run again (a task retried after its first run broke off) counts once: its
/// read ranges, its stage's rejected rows and its metrics replace the first run's, the
/// rejects dataset holds every rejected row exactly once, and the books close with the
/// counts the generator knows.
#[tokio::test]
async fn a_partition_run_again_counts_once() {
    use futures::StreamExt;
    use sluice::ledger::rejects::OnError;
    use sluice::Stage;

    let dir = tempfile::tempdir().expect("tmp");
    // 30000 rows; every 1000th row after the sample has a bad `n`, every 7th row a
    // category the lookup lacks (the bad rows never reach the lookup).
    let (rows, mut bad, mut missing) = (30_000u64, 0u64, 0u64);
    let mut text = String::from("id,cat,n\n");
    for i in 0..rows {
        let cat = if i % 7 == 3 {
            "zz"
        } else {
            ["a", "b"][(i % 2) as usize]
        };
        let n = if i >= 5000 && i % 1000 == 0 {
            bad += 1;
            "oops".to_string()
        } else {
            if cat == "zz" {
                missing += 1;
            }
            (i * 3).to_string()
        };
        text.push_str(&format!("{i},{cat},{n}\n"));
    }
    let data = write(dir.path(), "rows #1.csv", &text);
    let cats = write(dir.path(), "cats.csv", "cat,label\na,Alpha\nb,Beta\n");
    let ctx = sluice::context::session_with(2, Some(1024));
    let options = ReadOptions {
        paths: vec![data],
        on_error: OnError::Reject,
        ..ReadOptions::default()
    };
    let stages = [Stage::Lookup(Box::new(LookupSpec {
        name: "cats".into(),
        paths: vec![cats],
        on: vec![KeyPair::same("cat")],
        on_missing: Some("reject".into()),
        ..LookupSpec::default()
    }))];
    let (source, applied) = read_then(&ctx, options, &stages).await;
    let rejects_dir = dir.path().join("_rejects");
    source.rejects.set_dir(rejects_dir.clone());
    let plan = applied.df.create_physical_plan().await.expect("plan");
    let partitions = plan.properties().output_partitioning().partition_count();
    assert_eq!(partitions, 2, "the file is read in two ranges");

    // Partition 0's first run: one batch, then the task breaks off.
    let mut first = plan.execute(0, ctx.task_ctx()).expect("run 0");
    assert!(first.next().await.expect("a batch").is_ok());
    drop(first);
    // Every partition to its end, partition 0 again.
    let mut written = 0u64;
    for p in 0..partitions {
        let mut stream = plan.execute(p, ctx.task_ctx()).expect("run");
        while let Some(batch) = stream.next().await {
            written += batch.expect("batch").num_rows() as u64;
        }
    }
    assert_eq!(written, rows - bad - missing);

    let flow = sluice::ledger::plan_flow(&plan);
    let r = &source.rejects;
    assert_eq!(r.rejected_later(), missing, "each miss once");
    // The rejects dataset holds each rejected row once: the retried partition's first run
    // left nothing behind.
    let records = r.finish(false).expect("rejects joined");
    assert_eq!(records, bad + missing);
    let books = sluice::ledger::close(
        &r.ledger,
        &flow,
        records,
        r.rejected_later(),
        r.rejected_at_write(),
        written,
    )
    .expect("the books balance");
    assert_eq!(books.rows_in, rows);
    assert_eq!(books.rows_out, rows - bad - missing);
    assert_eq!(books.rejected, bad + missing);
    r.finish(false).expect("finish");
    let lines: Vec<String> = std::fs::read_to_string(rejects_dir.join("rejects.ndjson"))
        .expect("rejects")
        .lines()
        .map(str::to_string)
        .collect();
    let unique: std::collections::HashSet<&String> = lines.iter().collect();
    assert_eq!(lines.len() as u64, bad + missing, "every rejected row once");
    assert_eq!(unique.len(), lines.len());
    let left: Vec<_> = std::fs::read_dir(&rejects_dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        ["rejects.ndjson"],
        "task files are joined and removed"
    );
}

/// A plan as bytes: the physical plan of a pipeline — sluice's CSV scan over a hive-partitioned
/// folder (partition values travel too), a lookup and a batch function — encoded in
/// DataFusion's protobuf form with sluice's codec and decoded in a fresh session (books
/// rebuilt from their id, the function registered by name, nothing else shared) gives the
/// same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_sent_as_bytes_runs_in_a_fresh_session() {
    use sluice::datafusion::physical_plan::collect;
    use sluice::ledger::rejects::{OnError, Rejects};

    let dir = tempfile::tempdir().expect("tmp");
    for (region, rows) in [
        ("eu ~%", "n,cat\n1,a\n2,b\n"),
        ("üs #1", "n,cat\n3,a\n4,c\n5,b\n"),
    ] {
        let folder = dir.path().join("data").join(format!("region={region}"));
        std::fs::create_dir_all(&folder).expect("mkdir");
        write(&folder, "rows.csv", rows);
    }
    let cats = write(dir.path(), "cäts #2.csv", "cat,label\na,Alpha\nb,Beta\n");
    let mut stages = lookup_then_doubled(cats);
    // Rows without a match are rejected: the scan carries each row's origin to the lookup.
    if let sluice::Stage::Lookup(l) = &mut stages[0] {
        l.on_missing = Some("reject".into());
    }
    let here = sluice::context::session(2);
    let options = ReadOptions {
        paths: vec![dir.path().join("data").display().to_string()],
        hive_partitioning: true,
        ..ReadOptions::default()
    };
    let (source, applied) = read_then(&here, options, &stages).await;
    source.rejects.set_dir(dir.path().join("rejects here"));
    let plan = applied.df.create_physical_plan().await.expect("plan");
    let shown = sluice::datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string();
    assert!(
        shown.contains("CsvScanExec") && shown.contains("BatchFnExec"),
        "{shown}"
    );
    let bytes = sluice::codec::plan_to_bytes(Arc::clone(&plan)).expect("encode");
    let expected = sorted_rows(&collect(plan, here.task_ctx()).await.expect("run here"));
    assert_eq!(expected.len(), 4, "{expected:?}");
    assert!(
        !expected.iter().any(|r| r.contains("__sluice")),
        "{expected:?}"
    );
    assert!(
        expected
            .iter()
            .any(|r| r.contains("üs #1") && r.contains("Alpha")),
        "{expected:?}"
    );

    let books = Arc::new(Rejects::with_id(source.rejects.id(), OnError::Reject));
    books.set_dir(dir.path().join("rejects there"));
    let (there, _) = fresh_session(&books);
    let decoded = sluice::codec::plan_from_bytes(&bytes, &there.task_ctx()).expect("decode");
    let got = sorted_rows(&collect(decoded, there.task_ctx()).await.expect("run there"));
    assert_eq!(got, expected);
    // The decoded scan counted its rows in the books it found there.
    let counted: u64 = books.per_file().values().map(|f| f.rows_ok).sum();
    assert_eq!(counted, 5);
    assert_eq!(books.rejected_later(), 1);
}

/// The Parquet scan travels too: each part's DataFusion scan in protobuf form inside
/// sluice's file-by-file node; decoded in a fresh session it reads the same rows and counts
/// them in the books it finds there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_scan_sent_as_bytes_reads_the_same_rows() {
    use sluice::datafusion::arrow::array::StringArray;
    use sluice::datafusion::parquet::arrow::ArrowWriter;
    use sluice::datafusion::parquet::file::properties::WriterProperties;
    use sluice::datafusion::physical_plan::collect;
    use sluice::ledger::rejects::{OnError, Rejects};
    use sluice::Source;

    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("pärt #1 ~%.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
    ]));
    let file = std::fs::File::create(&path).expect("create");
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(1000))
        .build();
    let mut w = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props)).expect("writer");
    for chunk in 0..5i64 {
        let n: Int64Array = (chunk * 1000..(chunk + 1) * 1000).collect();
        let s: StringArray = (0..1000).map(|i| Some(format!("v{i}"))).collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(n), Arc::new(s)])
            .expect("batch");
        w.write(&batch).expect("write");
    }
    w.close().expect("close");

    let here = sluice::context::session(2);
    let options = ReadOptions {
        paths: vec![path.display().to_string()],
        ..ReadOptions::default()
    };
    let source = Source::open(&here, options).await.expect("open");
    let df = source
        .to_dataframe(&here)
        .expect("df")
        .aggregate(
            vec![],
            vec![
                sluice::datafusion::functions_aggregate::expr_fn::count(
                    sluice::datafusion::prelude::lit(1),
                ),
                sluice::datafusion::functions_aggregate::expr_fn::sum(
                    sluice::datafusion::prelude::col("n"),
                ),
            ],
        )
        .expect("aggregate");
    let plan = df.create_physical_plan().await.expect("plan");
    let shown = sluice::datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string();
    assert!(shown.contains("FileByFileExec"), "{shown}");
    let bytes = sluice::codec::plan_to_bytes(Arc::clone(&plan)).expect("encode");

    let books = Arc::new(Rejects::with_id(source.rejects.id(), OnError::Reject));
    let (there, _) = fresh_session(&books);
    let decoded = sluice::codec::plan_from_bytes(&bytes, &there.task_ctx()).expect("decode");
    let out = collect(decoded, there.task_ctx()).await.expect("run there");
    let text = sluice::datafusion::arrow::util::pretty::pretty_format_batches(&out)
        .expect("format")
        .to_string();
    // 5000 rows, 0 + 1 + ... + 4999.
    assert!(
        text.contains("| 5000 ") && text.contains("| 12497500 "),
        "{text}"
    );
    let counted: u64 = books.per_file().values().map(|f| f.rows_ok).sum();
    assert_eq!(counted, 5000);
}

/// A scheduler and one executor in this process, the executor with `functions`
/// registered; the scheduler's URL once the executor has registered.
async fn in_process_cluster(functions: Vec<sluice::BatchFn>) -> sluice::cluster::SchedulerUrl {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port()
    };
    let port = free();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    tokio::spawn(sluice::cluster::run_scheduler(addr, 180));
    let url: sluice::cluster::SchedulerUrl = format!("df://127.0.0.1:{port}").parse().expect("url");
    tokio::spawn(sluice::cluster::run_executor(
        sluice::cluster::ExecutorOptions {
            scheduler: url.clone(),
            bind: format!("127.0.0.1:{}", free()).parse().expect("bind"),
            grpc_port: free(),
            slots: 2,
            work_dir: None,
            heartbeat: 60,
            advertise_host: None,
            functions,
        },
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let listed = reqwest::get(format!("http://127.0.0.1:{port}/api/executors"))
            .await
            .ok()
            .map(|r| r.text());
        let n = match listed {
            Some(text) => text.await.unwrap_or_default().matches("\"id\"").count(),
            None => 0,
        };
        if n >= 1 {
            return url;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the executor did not register"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A Rust batch function on a cluster runs on executors that registered it under its name
/// (a program embedding the executor); on executors that did not, the job fails with one
/// line naming it and commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_function_runs_on_executors_that_registered_it() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("in")).expect("mkdir");
    let mut sum = 0i64;
    for f in 0..4 {
        let mut text = String::from("n,cat\n");
        for r in 0..50i64 {
            let n = f * 100 + r;
            sum += n;
            text.push_str(&format!("{n},c{}\n", r % 3));
        }
        write(&dir.path().join("in"), &format!("p{f}.csv"), &text);
    }
    let input = dir.path().join("in").display().to_string();
    let job = |url: sluice::cluster::SchedulerUrl, out: &str| {
        Pipeline::read([input.clone()])
            .map_batches("doubled", doubled)
            .write(SinkOptions {
                path: dir.path().join(out).display().to_string(),
                ..SinkOptions::default()
            })
            .threads(2)
            .cluster(url)
    };
    let with = in_process_cluster(vec![sluice::BatchFn {
        name: "doubled".into(),
        f: Arc::new(doubled),
    }])
    .await;
    let report = job(with, "out").run().await.expect("run on the cluster");
    assert_eq!((report.rows_in, report.rows_out), (200, 200));
    let ctx = sluice::datafusion::prelude::SessionContext::new();
    let out = dir.path().join("out").display().to_string();
    ctx.register_parquet("t", &out, Default::default())
        .await
        .expect("read back");
    let rows = ctx
        .sql("SELECT sum(n) AS n, sum(doubled) AS d FROM t")
        .await
        .expect("sql")
        .collect()
        .await
        .expect("collect");
    let col = |i: usize| as_int64_array(rows[0].column(i)).expect("int").value(0);
    assert_eq!((col(0), col(1)), (sum, 2 * sum));

    let without = in_process_cluster(Vec::new()).await;
    let e = job(without, "out2")
        .run()
        .await
        .expect_err("no such function there")
        .to_string();
    assert!(e.contains("no batch function 'doubled'"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(!dir.path().join("out2").exists());
}

/// A scan cut for a cluster ([`sluice::cluster::restrictable_scans`]) is a `DataSourceExec`
/// whose files are the scan's partitions: Ballista's own per-task rewrite
/// (`restrict_plan_to_partitions`, run on the scheduler's decoded copy, then sent on as
/// bytes as a task's plan is) keeps exactly the task's partitions. Each task reads exactly
/// the rows the local run reads in those partitions, a task given no partition reads
/// nothing, and over all tasks the books count every row once (rejects included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_cut_for_a_cluster_reads_each_tasks_partitions() {
    use ballista_scheduler::state::task_builder::restrict_plan_to_partitions;
    use sluice::datafusion::physical_plan::{collect, execute_stream_partitioned};
    use sluice::ledger::rejects::{OnError, Rejects};

    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("in ~%#");
    std::fs::create_dir_all(&data).expect("mkdir");
    // 6 files of known rows (one bad row: a third field), 33 good rows in all.
    let mut good = 0u64;
    for f in 0..6 {
        let mut text = String::from("n,cat\n");
        for i in 0..(f + 3) {
            text.push_str(&format!("{},c{}\n", f * 100 + i, i % 3));
            good += 1;
        }
        if f == 4 {
            text.push_str("9999,bad,extra\n");
        }
        write(&data, &format!("pärt {f} #.csv"), &text);
    }
    assert_eq!(good, 33);
    let here = sluice::context::session(4);
    let options = ReadOptions {
        paths: vec![data.display().to_string()],
        on_error: OnError::Reject,
        ..ReadOptions::default()
    };
    let (source, applied) = read_then(&here, options, &[]).await;
    source.rejects.set_dir(dir.path().join("rejects here"));
    let plan = applied.df.create_physical_plan().await.expect("plan");
    let partitions = plan.properties().output_partitioning().partition_count();
    assert!(partitions >= 3, "{partitions}");
    // The local rows, partition by partition.
    let mut local = Vec::new();
    for stream in execute_stream_partitioned(Arc::clone(&plan), here.task_ctx()).expect("run") {
        use futures::TryStreamExt;
        let batches: Vec<RecordBatch> = stream.try_collect().await.expect("rows");
        local.push(sorted_rows(&batches));
    }
    let local_rows: usize = local.iter().map(Vec::len).sum();
    assert_eq!(local_rows as u64, good);

    let cut = sluice::cluster::restrictable_scans(Arc::clone(&plan)).expect("cut");
    let shown = sluice::datafusion::physical_plan::displayable(cut.as_ref())
        .indent(false)
        .to_string();
    assert!(
        shown.contains("DataSourceExec") && !shown.contains("UnionExec"),
        "{shown}"
    );
    assert_eq!(
        cut.properties().output_partitioning().partition_count(),
        partitions
    );
    let bytes = sluice::codec::plan_to_bytes(cut).expect("encode");
    // The scheduler's copy.
    let books = Arc::new(Rejects::with_id(source.rejects.id(), OnError::Reject));
    books.set_dir(dir.path().join("rejects there"));
    let (scheduler, _) = fresh_session(&books);
    let scheduled = sluice::codec::plan_from_bytes(&bytes, &scheduler.task_ctx()).expect("decode");
    // Tasks: every partition once, in slices of several sizes, and a task given none.
    let mut tasks: Vec<Vec<usize>> = vec![vec![], vec![0]];
    tasks.push((1..partitions - 1).collect());
    tasks.push(vec![partitions - 1]);
    let mut seen = Vec::new();
    for task in &tasks {
        let restricted =
            restrict_plan_to_partitions(Arc::clone(&scheduled), task).expect("restrict");
        assert_eq!(
            restricted
                .properties()
                .output_partitioning()
                .partition_count(),
            task.len(),
            "{task:?}"
        );
        let sent = sluice::codec::plan_to_bytes(restricted).expect("encode task");
        let (executor, _) = fresh_session(&books);
        let run = sluice::codec::plan_from_bytes(&sent, &executor.task_ctx()).expect("decode");
        let got = sorted_rows(&collect(run, executor.task_ctx()).await.expect("task runs"));
        let mut expected: Vec<String> = task.iter().flat_map(|&p| local[p].clone()).collect();
        expected.sort();
        assert_eq!(got, expected, "task {task:?}");
        seen.extend(task.iter().copied());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..partitions).collect::<Vec<_>>());
    // The books of the tasks' side: every good row once, the bad row rejected once.
    let counted: u64 = books.per_file().values().map(|f| f.rows_ok).sum();
    assert_eq!(counted, good);
    let rejected: u64 = books.per_file().values().map(|f| f.rows_rejected).sum();
    assert_eq!(rejected, 1);
}
