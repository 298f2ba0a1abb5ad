//! An enrich stage's calls end with its job: once a job has failed (or its future was
//! dropped), no request goes out on its behalf any more, even in a process that lives on.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice::Progress;
use sluice_testkit::{ApiServer, Reply};

// regression: call tasks were spawned detached, so after `--on-error fail` stopped the job
// the queued keys kept calling the API for as long as the process lived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_goes_out_after_the_job_failed() {
    // Every key takes 100 ms; key id0 fails at once with a 404.
    let server = ApiServer::start(|req| {
        if req.last_segment() == "id0" {
            Reply::status(404)
        } else {
            Reply::json(200, "{\"title\": \"t\"}").after(Duration::from_millis(100))
        }
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("data")).expect("mkdir");
    // Two files, two partitions: a.csv fails fast (its first key is a 404) while b.csv's 400
    // keys wait for their turn at 4 calls in flight. b.csv starts with the 404 key too, so
    // the job fails at once whichever partition queues its calls first.
    std::fs::write(dir.path().join("data/a.csv"), "record_id\nid0\nid1\nid2\n").expect("a");
    let mut csv = String::from("record_id\nid0\n");
    for i in 100..500 {
        csv.push_str(&format!("id{i}\n"));
    }
    std::fs::write(dir.path().join("data/b.csv"), csv).expect("b");
    let toml = format!(
        r#"
[source]
paths = "data"

[settings]
threads = 2

[[enrich]]
name = "meta"
url = "{}"
concurrency = 4
retries = 0
on_error = "fail"

[enrich.extract]
title = "/title"

[sink]
path = "out"
"#,
        server.url("/meta/{record_id}")
    );
    let job = sluice::pipeline::parse(&toml, &dir.path().join("p.toml")).expect("pipeline");
    let err = job.run(&Progress::default()).await.expect_err("must fail");
    assert!(err.to_string().contains("404"), "{err}");
    let at_failure = server.counters.requests.load(Ordering::Relaxed);
    // 403 keys at 4 in flight and 100 ms each would take 10 s; the job failed long before.
    assert!(at_failure < 200, "{at_failure} requests before the failure");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = server.counters.requests.load(Ordering::Relaxed);
    // Calls already on the wire may land; nothing new starts.
    assert!(
        later <= at_failure + 4,
        "{} requests went out after the job failed",
        later - at_failure
    );
    assert!(!dir.path().join("out").exists());
}
