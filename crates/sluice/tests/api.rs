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
