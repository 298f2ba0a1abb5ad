//! A rejects output that cannot be written stops the job; it never makes the rest of the
//! file vanish as if the file were at fault.

use sluice::source::{OnError, ReadOptions, Source};

// regression: a failed rejects write (no rejects folder, a full disk) turned into "this
// file failed", and every row after the bad one was silently dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejects_write_failure_fails_the_scan() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("x.csv");
    let mut csv = String::from("a,b\n");
    for i in 0..100 {
        csv.push_str(&format!("{i},x\n"));
    }
    csv.push_str("zz,bad\n");
    for i in 100..200 {
        csv.push_str(&format!("{i},y\n"));
    }
    std::fs::write(&path, csv).expect("write");
    let ctx = sluice::context::session(2);
    let source = Source::open(
        &ctx,
        ReadOptions {
            paths: vec![path.display().to_string()],
            schema: Some("a BIGINT".into()),
            on_error: OnError::Reject,
            ..ReadOptions::default()
        },
    )
    .await
    .expect("open");
    // No rejects folder was set: the bad row has nowhere to go.
    let result = source.to_dataframe(&ctx).expect("frame").collect().await;
    let err = result.expect_err("the scan must fail, not drop the rest of the file");
    assert!(err.to_string().contains("nowhere to go"), "{err}");
    assert!(
        source.rejects.failed().is_empty(),
        "{:?}",
        source.rejects.failed()
    );

    // With a folder, the 200 good rows are read and the bad one is kept.
    let source = Source::open(
        &ctx,
        ReadOptions {
            paths: vec![path.display().to_string()],
            schema: Some("a BIGINT".into()),
            ..ReadOptions::default()
        },
    )
    .await
    .expect("open");
    source.rejects.set_dir(dir.path().join("rejects"));
    let batches = source
        .to_dataframe(&ctx)
        .expect("frame")
        .collect()
        .await
        .expect("scan");
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 200);
    assert_eq!(source.rejects.rejected(), 1);
}
