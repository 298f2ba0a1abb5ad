//! An object that vanishes between listing and reading (moto S3 on loopback): reported
//! with its name, never a silent loss.

use sluice::source::{OnError, ReadOptions, Source};
use sluice_testkit::moto::Moto;

async fn open(
    moto: &Moto,
    ctx: &sluice::datafusion::prelude::SessionContext,
    mode: OnError,
) -> Source {
    Source::open(
        ctx,
        ReadOptions {
            paths: vec!["s3://bkt/in/".into()],
            storage: moto.storage_options().into_iter().collect(),
            on_error: mode,
            ..ReadOptions::default()
        },
    )
    .await
    .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_deleted_after_listing_is_reported_by_name() {
    let Some(moto) = Moto::start(&[]) else { return };
    moto.bucket("bkt");
    moto.put("bkt", "in/a.csv", "id,v\n1,x\n2,y\n");
    moto.put("bkt", "in/b.csv", "id,v\n3,z\n");

    // reject (default): the other file is read, the vanished one is in files_failed.
    let ctx = sluice::context::session(2);
    let source = open(&moto, &ctx, OnError::Reject).await;
    moto.delete("bkt", "in/b.csv");
    let batches = source
        .to_dataframe(&ctx)
        .expect("frame")
        .collect()
        .await
        .expect("collect");
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2);
    let failed = source.rejects.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].file, "s3://bkt/in/b.csv");
    assert!(
        failed[0].reason.contains("vanished during the run"),
        "{failed:?}"
    );

    // fail: the error names the object.
    moto.put("bkt", "in/b.csv", "id,v\n3,z\n");
    let ctx = sluice::context::session(2);
    let source = open(&moto, &ctx, OnError::Fail).await;
    moto.delete("bkt", "in/b.csv");
    let err = source
        .to_dataframe(&ctx)
        .expect("frame")
        .collect()
        .await
        .expect_err("vanished");
    let msg = err.to_string();
    assert!(
        msg.contains("s3://bkt/in/b.csv: the file vanished during the run"),
        "{msg}"
    );
}
