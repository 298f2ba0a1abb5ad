//! `[[enrich]]` against a real HTTP server on 127.0.0.1 started by each test
//! (`sluice_testkit::ApiServer`), driving the real binary.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_testkit::{
    faulty_api, meta_api, meta_object, overloaded_api, ApiServer, Fate, Faults, Reply, Request,
};

use crate::rejects::assert_identity;
use crate::workdir::Workdir;

/// A CSV of `rows` rows cycling over `ids`.
fn data(wd: &Workdir, ids: &[String], rows: usize) {
    let mut csv = String::from("record_id,n\n");
    for i in 0..rows {
        let id = &ids[i % ids.len()];
        let quoted = if id.contains([',', '"', '\n']) {
            format!("\"{}\"", id.replace('"', "\"\""))
        } else {
            id.clone()
        };
        csv.push_str(&format!("{quoted},{i}\n"));
    }
    wd.write("data.csv", csv);
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("id{i}")).collect()
}

/// A pipeline reading data.csv through one enrich stage (`extra` adds keys to it) into `out`.
fn pipeline(url: &str, extra: &str) -> String {
    format!(
        r#"
[source]
paths = "data.csv"

[[enrich]]
name = "meta"
url = "{url}"
{extra}
[enrich.extract]
title = "/title"
owner = "/owner/name"
score = {{ path = "/score", type = "bigint" }}

[sink]
path = "out"
mode = "overwrite"
"#
    )
}

/// Runs `sluice run` on `text` off the async runtime (the server keeps serving); returns
/// the report, or the stderr when `expect_ok` is false.
async fn run(
    wd: &Arc<Workdir>,
    text: String,
    expect_ok: bool,
) -> Result<serde_json::Value, String> {
    let wd = Arc::clone(wd);
    tokio::task::spawn_blocking(move || {
        wd.write("p.toml", text);
        let _ = std::fs::remove_file(wd.path("r.json"));
        let out = wd
            .sluice()
            .args(["run", "p.toml", "--report-json", "r.json", "--quiet"])
            .output()
            .expect("run sluice");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() != expect_ok {
            panic!("sluice run: status {:?}\n{stderr}", out.status.code());
        }
        if !expect_ok {
            return Err(stderr);
        }
        Ok(serde_json::from_str(&wd.read("r.json")).expect("report"))
    })
    .await
    .expect("join")
}

/// (record_id, title, owner, score) of one output row.
type Row = (String, Option<String>, Option<String>, Option<i64>);

/// Every output row, in input order.
fn output(wd: &Workdir) -> Vec<Row> {
    // NDJSON keeps exact values (CSV output quotes).
    let text = wd.ok(&[
        "query",
        "SELECT record_id, title, owner, score FROM t ORDER BY n",
        "-t",
        "t=out",
        "--output",
        "ndjson",
    ]);
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["record_id"].as_str().unwrap_or_default().to_string(),
                v["title"].as_str().map(str::to_string),
                v["owner"].as_str().map(str::to_string),
                v["score"].as_i64(),
            )
        })
        .collect()
}

fn enrich_report(report: &serde_json::Value) -> &serde_json::Value {
    &report["enrich"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_gets_its_answer_with_one_call_per_key_and_bounded_concurrency() {
    let server = ApiServer::start(meta_api(Duration::from_millis(5))).await;
    let wd = Arc::new(Workdir::new());
    let keys = ids(500);
    data(&wd, &keys, 5000);
    let report = run(
        &wd,
        pipeline(&server.url("/meta/{record_id}"), "concurrency = 8"),
        true,
    )
    .await
    .expect("report");
    assert_identity(&report);
    assert_eq!(report["rows_out"], 5000);
    for (id, title, owner, score) in output(&wd) {
        assert_eq!(title.as_deref(), Some(format!("title-{id}").as_str()));
        assert_eq!(owner.as_deref(), Some(format!("owner-{id}").as_str()));
        assert_eq!(score, Some(id.chars().count() as i64));
    }
    let c = &server.counters;
    assert_eq!(
        c.requests.load(Ordering::SeqCst),
        500,
        "one call per distinct key"
    );
    assert!(c.per_target().values().all(|n| *n == 1));
    let peak = c.max_in_flight.load(Ordering::SeqCst);
    assert!(peak <= 8, "in flight {peak} > 8");
    assert!(peak >= 4, "concurrency was not used: {peak}");
    assert!(
        c.connections.load(Ordering::SeqCst) <= 16,
        "connections are reused"
    );
    let e = enrich_report(&report);
    assert_eq!(e["distinct_keys"], 500);
    assert_eq!(e["calls"], 500);
    assert_eq!(e["rows"], 5000);
    assert!(e["max_in_flight"].as_u64().unwrap_or(99) <= 8, "{e}");
    assert!(e["latency_ms_p50"].as_f64().unwrap_or(0.0) >= 5.0, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_at_the_server() {
    let server = ApiServer::start(meta_api(Duration::ZERO)).await;
    let wd = Arc::new(Workdir::new());
    data(&wd, &ids(120), 600);
    let started = Instant::now();
    let report = run(
        &wd,
        pipeline(
            &server.url("/meta/{record_id}"),
            "concurrency = 32\nrate_limit = \"50/s\"",
        ),
        true,
    )
    .await
    .expect("report");
    assert_eq!(report["rows_out"], 600);
    let c = &server.counters;
    assert_eq!(c.requests.load(Ordering::SeqCst), 120);
    // 120 requests at 50/s take at least 119/50 s; no one-second window holds more than 50
    // (plus one for the window's edge).
    assert!(started.elapsed() >= Duration::from_millis(2300));
    let peak = c.max_in_window(Duration::from_secs(1));
    assert!(peak <= 51, "{peak} requests in one second");
    assert!(c.rate() <= 52.0, "rate {}", c.rate());
}

/// Fails each target's first attempts in a chosen way, then answers like `meta_api`.
fn flaky(fail_first: u64, how: fn(u64) -> Reply) -> impl Fn(&Request) -> Reply + Send + Sync {
    let ok = meta_api(Duration::ZERO);
    move |req: &Request| {
        if req.seen_before < fail_first {
            how(req.seen_before)
        } else {
            ok(req)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_recover_from_500_429_drops_and_timeouts() {
    let server = ApiServer::start(flaky(3, |attempt| match attempt {
        0 => Reply::status(500),
        1 => Reply::Drop(Duration::ZERO),
        _ => Reply::status(429),
    }))
    .await;
    let slow = ApiServer::start(flaky(1, |_| {
        Reply::json(200, "{}").after(Duration::from_millis(1500))
    }))
    .await;
    let wd = Arc::new(Workdir::new());
    data(&wd, &ids(20), 100);
    let extra = "concurrency = 4\nretries = 4\nbackoff = \"5ms\"\nretry_budget = 10.0";
    let report = run(&wd, pipeline(&server.url("/meta/{record_id}"), extra), true)
        .await
        .expect("report");
    assert_eq!(report["rows_out"], 100, "{report}");
    assert_eq!(report["rows_rejected"], 0);
    assert_eq!(server.counters.requests.load(Ordering::SeqCst), 80);
    let e = enrich_report(&report);
    assert_eq!(e["retries"], 60, "{e}");
    assert_eq!(e["failures_by_cause"]["500"], 20, "{e}");
    assert_eq!(e["failures_by_cause"]["429"], 20, "{e}");
    // The dropped connections are the third kind of failure.
    let all: u64 = e["failures_by_cause"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(all, 60, "{e}");
    assert!(output(&wd).iter().all(|r| r.1.is_some()));

    // A response slower than the timeout is retried.
    let extra =
        "concurrency = 4\nretries = 2\nbackoff = \"5ms\"\ntimeout = \"300ms\"\nretry_budget = 10.0";
    let report = run(&wd, pipeline(&slow.url("/meta/{record_id}"), extra), true)
        .await
        .expect("report");
    assert_eq!(report["rows_out"], 100, "{report}");
    assert_eq!(enrich_report(&report)["failures_by_cause"]["timeout"], 20);
    assert!(output(&wd).iter().all(|r| r.1.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_404_is_not_retried() {
    let ok = meta_api(Duration::ZERO);
    let server = ApiServer::start(move |req: &Request| {
        if req.path.ends_with("/missing") {
            Reply::status(404)
        } else if req.seen_before == 0 {
            Reply::status(429).header("retry-after", "1")
        } else {
            ok(req)
        }
    })
    .await;
    let wd = Arc::new(Workdir::new());
    let keys: Vec<String> = vec!["a".into(), "b".into(), "missing".into()];
    data(&wd, &keys, 9);
    let extra = "concurrency = 4\nretries = 3\nbackoff = \"1ms\"";
    let report = run(&wd, pipeline(&server.url("/meta/{record_id}"), extra), true)
        .await
        .expect("report");
    assert_identity(&report);
    assert_eq!(report["rows_out"], 6);
    assert_eq!(report["rows_rejected"], 3);
    let per = server.counters.per_target();
    assert_eq!(
        per.get("/meta/missing"),
        Some(&1),
        "404 is not retried: {per:?}"
    );
    // The retry of each 429 came at least a second after it (slack for scheduling).
    let arrivals = server.counters.arrivals();
    for key in ["/meta/a", "/meta/b"] {
        let times: Vec<Instant> = arrivals
            .iter()
            .filter(|(_, t)| t == key)
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(times.len(), 2, "{key}");
        let gap = times[1].duration_since(times[0]);
        assert!(
            gap >= Duration::from_millis(950),
            "{key}: retried after {gap:?}"
        );
        assert!(gap < Duration::from_secs(5), "{key}: retried after {gap:?}");
    }
    // The rejects say why, with status and attempts.
    let rejects: Vec<serde_json::Value> = wd
        .read("out/_rejects/rejects.ndjson")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rejects.len(), 3);
    for r in &rejects {
        assert_eq!(r["kind"], "enrich_failed");
        assert_eq!(r["stage"], "meta");
        assert_eq!(r["status"], 404);
        assert_eq!(r["attempts"], 1);
        assert!(r["url"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/meta/missing"));
        assert!(r["raw"]
            .as_str()
            .unwrap_or_default()
            .contains("\"record_id\":\"missing\""));
        // The row's own file and line (row n sits on line n + 2, under the header).
        let raw: serde_json::Value =
            serde_json::from_str(r["raw"].as_str().unwrap_or_default()).expect("raw");
        let n = raw["n"].as_u64().expect("n");
        assert!(
            r["file"].as_str().unwrap_or_default().ends_with("data.csv"),
            "{r}"
        );
        assert_eq!(r["line"], n + 2, "{r}");
        let text = wd.read("data.csv");
        let at = r["byte_offset"].as_u64().expect("offset") as usize;
        assert!(text[at..].starts_with(&format!("missing,{n}\n")), "{r}");
    }
    assert!(
        !rejects
            .iter()
            .any(|r| r["raw"].to_string().contains("__sluice")),
        "the origin columns stay out of the rows' text"
    );
}

/// An API like real ones: a few keys answer 429 with `Retry-After: 1` (or 500) on their
/// first call, a few are always 404. A 429 delays its own key — never retried early, the
/// server counts — while the stage keeps calling for the others: other keys are answered
/// inside the Retry-After window, and the stage never pauses as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sporadic_429_delays_its_key_not_the_stage() {
    let faults = Faults {
        error_500: 0.05,
        too_many: 0.05,
        retry_after_s: 1,
        missing: 0.02,
        seed: 11,
    };
    let (api, early) = faulty_api(Duration::from_millis(10), faults);
    let server = ApiServer::start(api).await;
    let wd = Arc::new(Workdir::new());
    let keys = ids(400);
    data(&wd, &keys, 800);
    let fates: HashMap<&String, Fate> = keys.iter().map(|k| (k, faults.fate(k))).collect();
    let count = |f: Fate| fates.values().filter(|v| **v == f).count() as u64;
    assert!(count(Fate::TooMany) >= 10, "the seed gives enough 429 keys");
    let extra = "concurrency = 8\nretries = 3\nbackoff = \"5ms\"";
    let report = run(&wd, pipeline(&server.url("/meta/{record_id}"), extra), true)
        .await
        .expect("report");
    assert_identity(&report);
    // Two rows per key: the 404 keys' rows rejected, every other row enriched.
    assert_eq!(
        report["rows_rejected"],
        2 * count(Fate::Missing),
        "{report}"
    );
    assert_eq!(report["rows_out"], 800 - 2 * count(Fate::Missing));
    assert!(output(&wd)
        .iter()
        .all(|r| r.1.as_deref() == Some(&format!("title-{}", r.0)[..])));
    let e = enrich_report(&report);
    assert_eq!(
        e["retries"],
        count(Fate::TooMany) + count(Fate::Error500),
        "{e}"
    );
    assert_eq!(e["calls"], 400 + e["retries"].as_u64().unwrap_or(0), "{e}");
    assert_eq!(
        early.load(Ordering::SeqCst),
        0,
        "no key retried before its Retry-After"
    );
    assert_eq!(
        e["paused_all"], 0,
        "sporadic 429s never pause the stage: {e}"
    );
    // While the first 429ed key waited out its second, other keys were answered.
    let arrivals = server.counters.arrivals();
    let first_429 = arrivals
        .iter()
        .find(|(_, t)| {
            fates.get(&t.trim_start_matches("/meta/").to_string()) == Some(&Fate::TooMany)
        })
        .map(|(at, target)| (*at, target.clone()))
        .expect("a 429 key was called");
    let served_meanwhile = arrivals
        .iter()
        .filter(|(at, t)| {
            *t != first_429.1 && *at > first_429.0 && *at < first_429.0 + Duration::from_millis(900)
        })
        .count();
    assert!(
        served_meanwhile >= 20,
        "only {served_meanwhile} other requests during the Retry-After"
    );
    // A key waiting out its Retry-After does not hold back the keys queued behind it: by
    // the time the first 429ed key is asked again (a second later), nearly every key has
    // had its first call (at 8 in flight and 10 ms each, 400 keys take half a second; if
    // each waiting key kept its place among the 8, the 20-odd 429 keys would stall them).
    let retried_at = arrivals
        .iter()
        .filter(|(_, t)| *t == first_429.1)
        .nth(1)
        .map(|(at, _)| *at)
        .expect("the 429 key was asked again");
    let called_before: std::collections::HashSet<&String> = arrivals
        .iter()
        .filter(|(at, _)| *at < retried_at)
        .map(|(_, t)| t)
        .collect();
    assert!(
        called_before.len() >= 360,
        "only {} of 400 keys called before the first 429 key's retry",
        called_before.len()
    );
}

/// `sluice explain --analyze` runs the job and shows, under the enrich stage, the wall time
/// its requests waited on the rate limit and on `Retry-After` (with the request-seconds
/// beside it). The API's own fates say how many keys had to wait a whole second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_says_what_the_requests_waited_for() {
    let faults = Faults {
        error_500: 0.0,
        too_many: 0.05,
        retry_after_s: 1,
        missing: 0.0,
        seed: 11,
    };
    let wd = Arc::new(Workdir::new());
    let keys = ids(200);
    data(&wd, &keys, 600);
    let too_many = keys
        .iter()
        .filter(|k| faults.fate(k) == Fate::TooMany)
        .count();
    assert!(too_many >= 3, "the seed gives 429 keys");
    // 200 calls and their retries at 100 per second: the rate limit holds the stage for
    // about two seconds; each 429 key waits out its second.
    let extra = "concurrency = 8\nrate_limit = \"100/s\"\nretries = 2\nbackoff = \"5ms\"";
    // Each run against a fresh server (a key answers 429 on its first call to a server).
    let mut outputs = Vec::new();
    for format in ["text", "json"] {
        let (api, early) = faulty_api(Duration::from_millis(5), faults);
        let server = ApiServer::start(api).await;
        wd.write("p.toml", pipeline(&server.url("/meta/{record_id}"), extra));
        let in_wd = Arc::clone(&wd);
        let shown = tokio::task::spawn_blocking(move || {
            in_wd.ok(&["explain", "p.toml", "--analyze", "--format", format])
        })
        .await
        .expect("join");
        assert_eq!(early.load(Ordering::SeqCst), 0, "no key retried early");
        assert_eq!(
            server.counters.requests.load(Ordering::SeqCst),
            (200 + too_many) as u64,
            "one call per key and one retry per 429 key"
        );
        // The job ran: every row written.
        assert_eq!(output(&wd).len(), 600);
        outputs.push(shown);
    }
    let (text, json) = (&outputs[0], &outputs[1]);
    assert!(
        text.contains("run: 600 rows, 200 keys (0 cached)"),
        "{text}"
    );
    assert!(text.contains("600 rows in, 600 out, 0 rejected"), "{text}");
    assert!(text.contains("rate limit"), "{text}");
    assert!(text.contains("Retry-After"), "{text}");
    let plan: serde_json::Value = serde_json::from_str(json).expect("json");
    let e = &plan["stages"][0]["enrich"];
    assert_eq!(e["calls"], 200 + too_many as u64, "{e}");
    let seconds = plan["run"]["seconds"].as_f64().expect("seconds");
    let wall = |cause: &str| e["waited_wall_s"][cause].as_f64().expect("wall");
    let request_s = |cause: &str| e["waited_s"][cause].as_f64().expect("request-s");
    // Each 429 key waited its own second; they overlap, so the wall time is at least one
    // second and at most the run's, and below the request-seconds.
    assert!(request_s("retry_after") >= too_many as f64 * 0.99, "{e}");
    assert!(wall("retry_after") >= 0.99, "{e}");
    assert!(wall("retry_after") <= seconds, "{e} in {seconds} s");
    assert!(wall("retry_after") < request_s("retry_after"), "{e}");
    // (200 + retries - burst) calls spaced 10 ms apart: over a second and a half of it.
    assert!(wall("rate_limit") >= 1.5, "{e}");
    assert!(wall("rate_limit") <= seconds, "{e} in {seconds} s");
    assert!(e["calling_s"].as_f64().expect("calling") >= 1.9, "{e}");
}

/// An overloaded API (429 with `Retry-After: 1` for every request above 100 per second):
/// most answers say slow down, so the whole stage pauses for the Retry-After instead of
/// every key hammering on its own; few calls are wasted and every row is enriched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_api_pauses_the_stage_with_few_wasted_calls() {
    let server = ApiServer::start(overloaded_api(100.0)).await;
    let wd = Arc::new(Workdir::new());
    data(&wd, &ids(300), 300);
    let extra = "concurrency = 16\nretries = 10\nbackoff = \"5ms\"\nretry_budget = 5.0";
    let report = run(&wd, pipeline(&server.url("/meta/{record_id}"), extra), true)
        .await
        .expect("report");
    assert_eq!(report["rows_out"], 300, "{report}");
    assert_eq!(report["rows_rejected"], 0);
    let e = enrich_report(&report);
    let wasted = e["failures_by_cause"]["429"].as_u64().unwrap_or(0);
    assert!(e["paused_all"].as_u64().unwrap_or(0) >= 1, "{e}");
    assert!(
        wasted <= 150,
        "{wasted} calls answered 429 for 300 keys: {e}"
    );
    assert_eq!(e["calls"], 300 + e["retries"].as_u64().unwrap_or(0), "{e}");
}

/// Past `max_keys_in_memory` the oldest finished answers are dropped: a key asked again
/// later comes from the cache when there is one (no second call), or is called again; every
/// row is right either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_past_the_memory_bound_come_from_the_cache() {
    let server = ApiServer::start(meta_api(Duration::ZERO)).await;
    let wd = Arc::new(Workdir::new());
    // Blocks of 8192 rows, each over 50 keys of its own; the last block asks the first
    // block's keys again, long after they were answered (and forgotten): 40 blocks later,
    // more than the batches two partitions have in progress at once (9 each).
    let (blocks, per_block) = (41usize, 8192usize);
    let rows = blocks * per_block;
    let keys = (blocks as u64 - 1) * 50;
    let mut csv = String::from("record_id,n\n");
    for i in 0..rows {
        let block = (i / per_block) % (blocks - 1);
        csv.push_str(&format!("k{block}-{},{i}\n", i % 50));
    }
    wd.write("data.csv", csv);
    let url = server.url("/meta/{record_id}");
    let extra = "concurrency = 8\nmax_keys_in_memory = 10\ncache = \"cache/meta\"";
    let report = run(&wd, pipeline(&url, extra), true).await.expect("report");
    assert_eq!(report["rows_out"], rows as u64, "{report}");
    let e = enrich_report(&report);
    assert_eq!(
        e["calls"], keys,
        "the keys asked again came from the cache: {e}"
    );
    // Of the 2,000 answered keys, at most `max_keys_in_memory` finished answers stay, plus
    // the keys of the batches still in progress when the job ended (each partition works
    // on up to 9 batches of 50 keys at once: the one emitted and 8 ahead): the rest were
    // forgotten. (A fixed count failed under load, when more batches were in progress.)
    let partitions = report["threads"].as_u64().unwrap_or(1);
    let bound = keys - 10 - partitions * 9 * 50;
    assert!(
        e["keys_forgotten"].as_u64().unwrap_or(0) >= bound,
        "{bound}: {e}"
    );
    assert!(e["cache_hits"].as_u64().unwrap_or(0) >= 1, "{e}");
    let right = |wd: &Workdir| {
        output(wd)
            .iter()
            .all(|r| r.1.as_deref() == Some(&format!("title-{}", r.0)[..]))
    };
    assert!(right(&wd));
    // Without a cache, forgotten keys are called again.
    let calls_before = server.counters.requests.load(Ordering::SeqCst);
    let extra = "concurrency = 8\nmax_keys_in_memory = 10";
    let report = run(&wd, pipeline(&url, extra), true).await.expect("report");
    assert_eq!(report["rows_out"], rows as u64, "{report}");
    let e = enrich_report(&report);
    let calls = e["calls"].as_u64().unwrap_or(0);
    assert!(calls > keys, "{e}");
    assert_eq!(
        server.counters.requests.load(Ordering::SeqCst) - calls_before,
        calls
    );
    assert!(right(&wd));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_failures_are_rejected_or_nulled_never_lost() {
    // About 3% of keys always fail.
    let ok = meta_api(Duration::ZERO);
    let server = ApiServer::start(move |req: &Request| {
        let id = req.last_segment();
        let n: u64 = id.trim_start_matches("id").parse().unwrap_or(0);
        if n % 33 == 7 {
            Reply::status(500)
        } else {
            ok(req)
        }
    })
    .await;
    let wd = Arc::new(Workdir::new());
    let keys = ids(1000);
    data(&wd, &keys, 3000);
    let failing: usize = (0..1000).filter(|n| n % 33 == 7).count();
    let extra = "concurrency = 16\nretries = 2\nbackoff = \"1ms\"\nretry_budget = 1.0";
    let report = run(&wd, pipeline(&server.url("/meta/{record_id}"), extra), true)
        .await
        .expect("report");
    assert_identity(&report);
    assert_eq!(report["rows_rejected"], (failing * 3) as u64, "{report}");
    assert_eq!(report["rows_rejected_by_enrich"], (failing * 3) as u64);
    assert_eq!(report["rows_out"], (3000 - failing * 3) as u64);
    let e = enrich_report(&report);
    assert_eq!(e["failed_keys"], failing as u64);
    assert_eq!(e["failed_rows"], (failing * 3) as u64);
    // Every input row is in the output or in the rejects, exactly once.
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let text = wd.ok(&[
        "query",
        "SELECT n FROM t",
        "-t",
        "t=out",
        "--output",
        "ndjson",
    ]);
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("json");
        *seen.entry(v["n"].as_u64().expect("n")).or_default() += 1;
    }
    for l in wd.read("out/_rejects/rejects.ndjson").lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("json");
        assert_eq!(v["status"], 500);
        assert_eq!(v["attempts"], 3);
        let raw: serde_json::Value =
            serde_json::from_str(v["raw"].as_str().expect("raw")).expect("raw json");
        *seen.entry(raw["n"].as_u64().expect("n")).or_default() += 1;
    }
    assert_eq!(seen.len(), 3000);
    assert!(seen.values().all(|c| *c == 1));

    // on_error = "null": every row is written, failed ones with NULLs and a reason.
    let extra = "concurrency = 16\nretries = 0\non_error = \"null\"";
    let report = run(&wd, pipeline(&server.url("/meta/{record_id}"), extra), true)
        .await
        .expect("report");
    assert_eq!(report["rows_out"], 3000);
    assert_eq!(report["rows_rejected"], 0);
    let nulls = wd.query(
        "SELECT count(*) AS n FROM t WHERE title IS NULL AND _enrich_error LIKE '%HTTP 500%'",
        &[("t", "out")],
    );
    assert_eq!(nulls, ["n".to_string(), (failing * 3).to_string()]);

    // on_error = "fail": one line, nothing committed.
    std::fs::remove_dir_all(wd.path("out")).expect("rm");
    let extra = "concurrency = 16\nretries = 0\non_error = \"fail\"";
    let err = run(
        &wd,
        pipeline(&server.url("/meta/{record_id}"), extra),
        false,
    )
    .await
    .expect_err("fails");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("enrich 'meta': GET http://127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("HTTP 500 after 1 attempt"), "{err}");
    assert!(!wd.path("out").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_makes_a_second_run_call_nothing() {
    let server = ApiServer::start(meta_api(Duration::from_millis(2))).await;
    let wd = Arc::new(Workdir::new());
    data(&wd, &ids(200), 1000);
    let extra = "concurrency = 8\ncache = \"cache/meta\"\ncache_ttl = \"1d\"";
    let first = run(&wd, pipeline(&server.url("/meta/{record_id}"), extra), true)
        .await
        .expect("report");
    assert_eq!(enrich_report(&first)["calls"], 200);
    let before = output(&wd);
    let second = run(&wd, pipeline(&server.url("/meta/{record_id}"), extra), true)
        .await
        .expect("report");
    assert_eq!(
        server.counters.requests.load(Ordering::SeqCst),
        200,
        "no new calls"
    );
    let e = enrich_report(&second);
    assert_eq!(e["calls"], 0);
    assert_eq!(e["cache_hits"], 200);
    assert_eq!(output(&wd), before);
}

/// The cache on an object store (moto on loopback, a prefix with a space and an `é`): the
/// second run calls nothing, every answer from the store; an entry damaged in the store is a
/// miss, called again (and only that one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_on_an_object_store_makes_a_second_run_call_nothing() {
    let Some(moto) = sluice_testkit::moto::Moto::start(&[]) else {
        return;
    };
    moto.bucket("bkt");
    let server = ApiServer::start(meta_api(Duration::from_millis(2))).await;
    let wd = Arc::new(Workdir::new());
    data(&wd, &ids(200), 1000);
    let text = format!(
        "{}\n[storage]\nendpoint = \"{}\"\nallow_http = \"true\"\nregion = \"us-east-1\"\n\
         access_key_id = \"testing\"\nsecret_access_key = \"testing-secret-key\"\n",
        pipeline(
            &server.url("/meta/{record_id}"),
            "concurrency = 8\ncache = \"s3://bkt/api cache/méta/\""
        ),
        moto.endpoint()
    );
    let first = run(&wd, text.clone(), true).await.expect("report");
    assert_eq!(enrich_report(&first)["calls"], 200);
    let before = output(&wd);
    let entries = moto.keys("bkt", "api cache/méta/");
    assert_eq!(entries.len(), 200, "one object per key: {entries:?}");
    let second = run(&wd, text.clone(), true).await.expect("report");
    assert_eq!(server.counters.requests.load(Ordering::SeqCst), 200);
    let e = enrich_report(&second);
    assert_eq!(
        (e["calls"].clone(), e["cache_hits"].clone()),
        (0.into(), 200.into())
    );
    assert_eq!(output(&wd), before);
    // A damaged entry: its key alone is called again, and stored whole again.
    let damaged = &entries[17];
    let mut body = moto.get("bkt", damaged);
    body.push('!');
    moto.put_exact("bkt", damaged, &body);
    let third = run(&wd, text, true).await.expect("report");
    let e = enrich_report(&third);
    assert_eq!(
        (e["calls"].clone(), e["cache_hits"].clone()),
        (1.into(), 199.into())
    );
    assert_eq!(server.counters.requests.load(Ordering::SeqCst), 201);
    assert_eq!(output(&wd), before);
    assert!(!moto.get("bkt", damaged).ends_with('!'));
}

/// A cache on a store nobody answers (nothing listens on its endpoint): the run calls the
/// API for every key, writes every row, and says once, in one line, that the cache is off
/// (not a line per key, nor the store's retries for every key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cache_store_is_turned_off_with_one_warning() {
    let server = ApiServer::start(meta_api(Duration::from_millis(2))).await;
    let wd = Arc::new(Workdir::new());
    data(&wd, &ids(200), 1000);
    let text = format!(
        "{}\n[storage]\nendpoint = \"http://127.0.0.1:9\"\nallow_http = \"true\"\n\
         region = \"us-east-1\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n",
        pipeline(
            &server.url("/meta/{record_id}"),
            "concurrency = 8\ncache = \"s3://nowhere/cache\""
        )
    );
    let w = Arc::clone(&wd);
    let out = tokio::task::spawn_blocking(move || {
        w.write("p.toml", text);
        w.sluice()
            .args(["run", "p.toml", "--report-json", "r.json", "--quiet"])
            .output()
            .expect("run sluice")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let said: Vec<&str> = stderr.lines().filter(|l| l.contains("cache")).collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(said[0].contains("the cache is off"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&wd.read("r.json")).expect("report");
    assert_eq!(report["rows_out"], 1000, "{report}");
    let e = enrich_report(&report);
    assert_eq!(
        (e["calls"].clone(), e["cache_hits"].clone()),
        (200.into(), 0.into())
    );
    assert_eq!(server.counters.requests.load(Ordering::SeqCst), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_half_way_then_rerun_calls_only_the_rest() {
    let server = ApiServer::start(meta_api(Duration::from_millis(40))).await;
    let wd = Arc::new(Workdir::new());
    data(&wd, &ids(300), 300);
    let text = pipeline(
        &server.url("/meta/{record_id}"),
        "concurrency = 4\ncache = \"cache/meta\"",
    );
    wd.write("p.toml", &text);
    let mut child = wd
        .sluice()
        .args(["run", "p.toml", "--quiet"])
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.counters.requests.load(Ordering::SeqCst) < 100 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let at_kill = server.counters.per_target();
    let report = run(&wd, text, true).await.expect("report");
    assert_eq!(report["rows_out"], 300);
    let e = enrich_report(&report);
    let (calls, hits) = (
        e["calls"].as_u64().unwrap_or(0),
        e["cache_hits"].as_u64().unwrap_or(0),
    );
    assert_eq!(calls + hits, 300, "{e}");
    // Only answers in flight at the kill (at most the concurrency) are asked again.
    let after = server.counters.per_target();
    let asked_twice: Vec<&String> = after
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, _)| t)
        .collect();
    assert!(asked_twice.len() <= 4, "asked again: {asked_twice:?}");
    assert!(
        hits as usize >= at_kill.len() - 4,
        "hits {hits}, done before the kill {}",
        at_kill.len()
    );
    assert_eq!(after.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_cannot_escape_their_url_segment_and_tokens_never_show() {
    std::env::set_var("SLUICE_TEST_META_TOKEN", "tok-9f8e7d6c5b4a");
    let token = "tok-9f8e7d6c5b4a";
    let ok = meta_api(Duration::ZERO);
    let server = ApiServer::start(move |req: &Request| {
        if req.headers.get("authorization").map(String::as_str) != Some("Bearer tok-9f8e7d6c5b4a") {
            return Reply::status(401);
        }
        if req.last_segment() == "fail me" {
            return Reply::status(500);
        }
        ok(req)
    })
    .await;
    let wd = Arc::new(Workdir::new());
    let keys: Vec<String> = ["a/../b", "x?y#z", "a b", "é/ü", "..", "fail me", "plain"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    data(&wd, &keys, 7);
    let extra = r#"concurrency = 2
retries = 1
backoff = "1ms"
headers = { Authorization = "Bearer ${env:SLUICE_TEST_META_TOKEN}" }"#;
    let url = server.url("/meta/{record_id}?key=${env:SLUICE_TEST_META_TOKEN}");
    let report = run(&wd, pipeline(&url, extra), true).await.expect("report");
    assert_identity(&report);
    assert_eq!(report["rows_out"], 5, "{report}");
    let per: HashMap<String, u64> = server.counters.per_target();
    let mut paths: Vec<String> = per
        .keys()
        .map(|t| t.split('?').next().unwrap_or_default().to_string())
        .collect();
    paths.sort();
    let mut expected = [
        "/meta/a%20b",
        "/meta/a%2F..%2Fb",
        "/meta/fail%20me",
        "/meta/plain",
        "/meta/x%3Fy%23z",
        "/meta/%C3%A9%2F%C3%BC",
    ];
    expected.sort();
    assert_eq!(paths, expected);
    // The server decoded each value back whole, in one segment.
    for (id, title, _, _) in output(&wd) {
        assert_eq!(title, Some(format!("title-{id}")));
    }
    // ".." cannot be a path segment: rejected without a call; "fail me" failed.
    let rejects = wd.read("out/_rejects/rejects.ndjson");
    assert!(
        rejects.contains("cannot be a URL path segment"),
        "{rejects}"
    );
    assert!(rejects.contains("key=***"), "{rejects}");
    // The token reached the server but appears nowhere sluice wrote.
    assert!(server
        .counters
        .headers_seen()
        .iter()
        .any(|h| h.contains(token)));
    let mut everything = serde_json::to_string(&report).expect("json");
    everything.push_str(&rejects);
    for f in wd.data_files("out") {
        everything.push_str(&String::from_utf8_lossy(
            &std::fs::read(wd.path(&format!("out/{f}"))).expect("read"),
        ));
    }
    assert!(!everything.contains(token), "the token leaked");
    // Nor does a failing run's error line.
    data(&wd, &["fail me".to_string()], 1);
    let strict = extra.to_string() + "\non_error = \"fail\"";
    let err = run(&wd, pipeline(&url, &strict), false)
        .await
        .expect_err("fails");
    assert!(!err.contains(token), "{err}");
    assert!(err.contains("key=***"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_concurrency_backs_off_on_429() {
    // The API allows 6 requests at once and answers 429 above that.
    let ok = meta_api(Duration::from_millis(10));
    let server = Arc::new(std::sync::Mutex::new(None::<Arc<sluice_testkit::Counters>>));
    let counters = Arc::clone(&server);
    let api = ApiServer::start(move |req: &Request| {
        let busy = counters
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.in_flight.load(Ordering::SeqCst)))
            .unwrap_or(0);
        if busy > 6 {
            Reply::status(429).after(Duration::from_millis(10))
        } else {
            ok(req)
        }
    })
    .await;
    if let Ok(mut s) = server.lock() {
        *s = Some(Arc::clone(&api.counters));
    }
    let wd = Arc::new(Workdir::new());
    data(&wd, &ids(400), 400);
    let extra = "concurrency = \"auto\"\nmax_concurrency = 64\nretries = 8\nbackoff = \"5ms\"\nretry_budget = 5.0";
    let report = run(&wd, pipeline(&api.url("/meta/{record_id}"), extra), true)
        .await
        .expect("report");
    assert_eq!(report["rows_out"], 400, "{report}");
    let e = enrich_report(&report);
    let final_limit = e["final_concurrency"].as_u64().unwrap_or(99);
    assert!(
        final_limit <= 16,
        "the limit stayed near the API's capacity: {e}"
    );
    let rejected = e["failures_by_cause"]["429"].as_u64().unwrap_or(0);
    assert!(rejected < 200, "too many 429s for 400 keys: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_endpoints_send_many_keys_per_request() {
    // The batch endpoint leaves one key out of its answer.
    let api = meta_api(Duration::from_millis(5));
    let server = ApiServer::start(move |req: &Request| {
        let reply = api(req);
        match reply {
            Reply::Respond {
                status,
                headers,
                body,
                delay,
            } if req.path == "/meta/batch" => {
                let mut v: serde_json::Value = serde_json::from_slice(&body).expect("json");
                if let Some(items) = v["items"].as_array_mut() {
                    items.retain(|i| i["id"] != "id13");
                }
                Reply::Respond {
                    status,
                    headers,
                    body: v.to_string().into_bytes(),
                    delay,
                }
            }
            other => other,
        }
    })
    .await;
    let wd = Arc::new(Workdir::new());
    data(&wd, &ids(1000), 5000);
    let extra = format!(
        r#"concurrency = 4
[enrich.batch]
size = 100
url = "{}"
body = '{{"ids": {{keys}}}}'
results = "/items"
key = "/id""#,
        server.url("/meta/batch")
    );
    let report = run(
        &wd,
        pipeline(&server.url("/meta/{record_id}"), &extra),
        true,
    )
    .await
    .expect("report");
    assert_identity(&report);
    assert_eq!(report["rows_out"], 4995, "{report}");
    assert_eq!(report["rows_rejected"], 5);
    let requests = server.counters.requests.load(Ordering::SeqCst);
    assert!(
        (10..=30).contains(&requests),
        "{requests} requests for 1000 keys"
    );
    let per = server.counters.per_target();
    assert_eq!(per.len(), 1, "only the batch endpoint was called: {per:?}");
    for (id, title, owner, _) in output(&wd) {
        assert_eq!(title, Some(format!("title-{id}")));
        assert_eq!(owner, Some(format!("owner-{id}")));
    }
    let rejects = wd.read("out/_rejects/rejects.ndjson");
    assert!(
        rejects.contains("key 'id13' is not in the batch response"),
        "{rejects}"
    );
    let e = enrich_report(&report);
    assert_eq!(e["distinct_keys"], 1000);
    assert_eq!(e["calls"], requests);
}

#[test]
fn enrich_mistakes_are_one_clear_line() {
    let wd = Workdir::new();
    data(&wd, &ids(3), 3);
    let url = "http://127.0.0.1:9/meta/{record_id}";
    let cases = [
        (
            pipeline("http://127.0.0.1:9/meta/{nope}", ""),
            "enrich 'meta': no column 'nope' (columns: record_id, n)",
        ),
        (
            pipeline(url, "concurrency = 0"),
            "concurrency must be at least 1",
        ),
        (
            pipeline(url, "concurrency = \"lots\""),
            "concurrency must be a number or \"auto\"",
        ),
        (
            pipeline(url, "rate_limit = \"fast\""),
            "rate_limit 'fast' is not like 500/s",
        ),
        (
            pipeline(url, "timeout = \"10 parsecs\""),
            "timeout '10 parsecs'",
        ),
        (
            pipeline(url, "on_error = \"ignore\""),
            "on_error must be reject, null or fail",
        ),
        (
            pipeline(url, "method = \"HEAD\""),
            "method must be GET, POST, PUT, PATCH or DELETE",
        ),
        (
            pipeline(url, "retries = 2\nretires = 3"),
            "unknown field `retires`",
        ),
        (
            pipeline(
                url,
                "headers = { Authorization = \"Bearer ${env:SLUICE_SURELY_UNSET_VAR}\" }",
            ),
            "environment variable SLUICE_SURELY_UNSET_VAR is not set",
        ),
        (
            pipeline("http://127.0.0.1:9/meta", ""),
            "needs a {column} placeholder",
        ),
        (
            pipeline(url, "cache_ttl = \"1d\""),
            "cache_ttl needs a cache folder",
        ),
        (
            pipeline(url, "on_error = \"null\"\nerror_column = \"n\""),
            "the new column 'n' is already a column of the input",
        ),
    ];
    for (text, expected) in cases {
        wd.write("p.toml", &text);
        let err = wd.fails(&["run", "p.toml"], 1);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(expected), "{expected}\n{err}");
    }
    // A bad extract type names the key and its line.
    wd.write(
        "p.toml",
        pipeline(url, "").replace("type = \"bigint\"", "type = \"date\""),
    );
    let err = wd.fails(&["run", "p.toml"], 1);
    assert!(
        err.contains("extract type must be string, bigint, double, boolean or json"),
        "{err}"
    );
    assert!(!wd.path("out").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_bodies_carry_values_as_json_and_auto_concurrency_grows() {
    // Answers a POST with the meta object of the "id" in its JSON body.
    let server = ApiServer::start(|req: &Request| {
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let ok_type =
            req.headers.get("content-type").map(String::as_str) == Some("application/json");
        match (req.method.as_str(), body["id"].as_str(), ok_type) {
            ("POST", Some(id), true) => {
                Reply::json(200, sluice_testkit::meta_object(id).to_string())
                    .after(Duration::from_millis(5))
            }
            _ => Reply::status(400),
        }
    })
    .await;
    let wd = Arc::new(Workdir::new());
    // Values that need JSON escaping.
    let mut keys = ids(300);
    keys.push("quote\"d".into());
    keys.push("back\\slash".into());
    data(&wd, &keys, 302);
    let extra = r#"method = "POST"
body = '{"id": {record_id}, "n": 1}'
concurrency = "auto"
max_concurrency = 64"#;
    let report = run(&wd, pipeline(&server.url("/meta"), extra), true)
        .await
        .expect("report");
    assert_eq!(report["rows_out"], 302, "{report}");
    for (id, title, _, _) in output(&wd) {
        assert_eq!(title, Some(format!("title-{id}")));
    }
    let e = enrich_report(&report);
    assert_eq!(e["calls"], 302);
    // Slow start took the limit well past its initial 4 on a healthy API.
    assert!(e["max_in_flight"].as_u64().unwrap_or(0) > 8, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_keeps_a_dead_api_from_being_hit_retries_times_over() {
    let server = ApiServer::start(|_: &Request| Reply::status(503)).await;
    let wd = Arc::new(Workdir::new());
    data(&wd, &ids(100), 100);
    // Without a budget, 100 keys x (1 + 5 retries) = 600 requests.
    let extra = "concurrency = 8\nretries = 5\nbackoff = \"1ms\"\nmax_backoff = \"2ms\"";
    let report = run(&wd, pipeline(&server.url("/meta/{record_id}"), extra), true)
        .await
        .expect("report");
    assert_identity(&report);
    assert_eq!(report["rows_rejected"], 100);
    let requests = server.counters.requests.load(Ordering::SeqCst);
    // 100 first attempts + 10 + 20% of them.
    assert!(requests <= 130, "{requests} requests");
    let e = enrich_report(&report);
    assert!(e["retry_budget_exhausted"].as_u64().unwrap_or(0) > 0, "{e}");
    let rejects = wd.read("out/_rejects/rejects.ndjson");
    assert!(rejects.contains("the retry budget is spent"), "{rejects}");
}

/// regression: a server echoing the request put the token — percent-encoded (upper or lower
/// case), JSON-escaped or base64 — into rejects' `message`, stderr and `_enrich_error`; with
/// `cache` set, a 2xx body echoing it was stored as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_secrets_are_redacted_in_every_encoding_and_never_cached() {
    use base64::Engine;
    let token = "T0k/en+9f 8e&7d\"6c";
    std::env::set_var("SLUICE_TEST_ECHO_TOKEN", token);
    let server = ApiServer::start(move |req: &Request| {
        let auth = req
            .headers
            .get("authorization")
            .cloned()
            .unwrap_or_default();
        let b64 = base64::engine::general_purpose::STANDARD.encode(auth.as_bytes());
        let echo = format!(
            "target={} lower={} json={} b64={}",
            req.target,
            lower_hex(&req.target),
            serde_json::to_string(&auth).unwrap_or_default(),
            b64
        );
        if req.last_segment().starts_with("bad") {
            // An error page echoing everything.
            return Reply::json(400, echo);
        }
        Reply::json(
            200,
            serde_json::json!({"title": format!("t-{}", req.last_segment()), "echo": echo})
                .to_string(),
        )
    })
    .await;
    let wd = Arc::new(Workdir::new());
    data(&wd, &["ok1".into(), "bad1".into(), "ok2".into()], 6);
    let url = server.url("/e/{record_id}?key=${env:SLUICE_TEST_ECHO_TOKEN}");
    let text = |on_error: &str| {
        format!(
            r#"
[source]
paths = "data.csv"

[[enrich]]
name = "echo"
url = "{url}"
retries = 0
cache = "cache/echo"
on_error = "{on_error}"
headers = {{ Authorization = "Bearer ${{env:SLUICE_TEST_ECHO_TOKEN}}" }}
[enrich.extract]
title = "/title"

[sink]
path = "out"
mode = "overwrite"
format = "ndjson"
"#
        )
    };
    let forbidden: Vec<String> = {
        let encoded: String = sluice_testkit_encode(token);
        vec![
            token.to_string(),
            encoded.clone(),
            lower_hex(&encoded),
            serde_json::to_string(token)
                .unwrap_or_default()
                .trim_matches('"')
                .to_string(),
            base64::engine::general_purpose::STANDARD.encode(format!("Bearer {token}")),
        ]
    };
    let leaks = |text: &str| -> Vec<String> {
        forbidden
            .iter()
            .filter(|f| text.contains(f.as_str()))
            .cloned()
            .collect()
    };
    let mut written = String::new();
    for on_error in ["reject", "null"] {
        let report = run(&wd, text(on_error), true).await.expect("report");
        written.push_str(&serde_json::to_string(&report).expect("json"));
        for f in wd.data_files("out") {
            written.push_str(&wd.read(&format!("out/{f}")));
        }
        if on_error == "reject" {
            let rejects = wd.read("out/_rejects/rejects.ndjson");
            assert!(rejects.contains("***"), "{rejects}");
            written.push_str(&rejects);
        } else {
            assert!(written.contains("_enrich_error"), "{written}");
        }
    }
    // fail mode: the error line.
    let err = run(&wd, text("fail"), false).await.expect_err("fails");
    written.push_str(&err);
    assert!(leaks(&written).is_empty(), "leaked {:?}", leaks(&written));
    // The 2xx answers echo the token: none of them was cached.
    let mut cached = 0;
    for entry in walk(&wd.path("cache")) {
        cached += 1;
        let body = String::from_utf8_lossy(&std::fs::read(&entry).expect("read")).into_owned();
        assert!(leaks(&body).is_empty(), "{}", entry.display());
    }
    assert_eq!(cached, 0, "answers echoing a secret must not be cached");
}

/// The token as a URL query carries it (RFC 3986 unreserved characters kept).
fn sluice_testkit_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `%2f` for `%2F` (the hex digits of percent escapes in lower case).
fn lower_hex(s: &str) -> String {
    let mut out = String::new();
    let mut rest = 0;
    for c in s.chars() {
        if rest > 0 {
            out.push(c.to_ascii_lowercase());
            rest -= 1;
        } else {
            out.push(c);
            if c == '%' {
                rest = 2;
            }
        }
    }
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// An API that redirects elsewhere cannot take the stage's headers (an API key) with it:
/// redirects go only to the templates' own hosts or `allow_hosts`, and no row value can
/// choose the scheme, host or port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_hosts_stay_within_allow_hosts() {
    std::env::set_var("SLUICE_TEST_REDIRECT_KEY", "key-5a4b3c2d1e");
    let elsewhere = ApiServer::start(meta_api(Duration::ZERO)).await;
    let target = elsewhere.url("/meta/moved");
    let ok = meta_api(Duration::ZERO);
    let api = ApiServer::start(move |req: &Request| {
        if req.last_segment() == "bounce" {
            return Reply::status(302).header("location", &target);
        }
        ok(req)
    })
    .await;
    let wd = Arc::new(Workdir::new());
    data(&wd, &["plain".to_string(), "bounce".to_string()], 2);
    let url = api.url("/meta/{record_id}");
    let headers = r#"retries = 3
backoff = "1ms"
headers = { X-Api-Key = "${env:SLUICE_TEST_REDIRECT_KEY}" }
"#;
    // Not followed by default: the row is rejected after one attempt, the other host
    // never sees a request (nor the key).
    let report = run(&wd, pipeline(&url, headers), true)
        .await
        .expect("report");
    assert_identity(&report);
    assert_eq!(report["rows_out"], 1, "{report}");
    assert_eq!(report["rows_rejected"], 1, "{report}");
    let rejects = wd.read("out/_rejects/rejects.ndjson");
    let port = elsewhere.addr().port();
    assert!(
        rejects.contains(&format!("redirected to 127.0.0.1:{port}"))
            && rejects.contains("not followed"),
        "{rejects}"
    );
    assert!(rejects.contains("\"attempts\":1"), "{rejects}");
    assert!(!rejects.contains("key-5a4b3c2d1e"), "{rejects}");
    assert_eq!(elsewhere.counters.per_target().values().sum::<u64>(), 0);

    // Listed in allow_hosts, the redirect is followed.
    let allowed = format!("{headers}allow_hosts = [\"127.0.0.1\"]\n");
    let report = run(&wd, pipeline(&url, &allowed), true)
        .await
        .expect("report");
    assert_eq!(report["rows_out"], 2, "{report}");
    assert_eq!(elsewhere.counters.per_target().values().sum::<u64>(), 1);

    // A template whose host comes from a row value, and a host outside allow_hosts, are
    // refused before any call.
    let err = run(&wd, pipeline("http://{record_id}/meta", ""), false)
        .await
        .expect_err("refused");
    assert!(
        err.contains("must spell out its scheme, host and port") && err.trim().lines().count() == 1,
        "{err}"
    );
    let listed = "allow_hosts = [\"api.example.org\"]\n";
    let err = run(&wd, pipeline(&url, listed), false)
        .await
        .expect_err("refused");
    assert!(
        err.contains(&format!(
            "127.0.0.1:{} is not in allow_hosts",
            api.addr().port()
        )),
        "{err}"
    );
}

/// Lookup and enrich stages are nodes the optimizer sees through: a column no later step
/// reads is never decoded (so its bad values reject nothing), and a filter on an input
/// column runs before the API is called. The same pipeline selecting every column does
/// reject the bad rows, which shows the bad values are there to be found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_pass_projections_and_filters_through() {
    let server = ApiServer::start(meta_api(Duration::ZERO)).await;
    let wd = Arc::new(Workdir::new());
    // 40 columns: record_id, category, n and 37 wide ones; wide_3 is BIGINT but 7 of the
    // 100 rows hold text there.
    let wide: Vec<String> = (0..37).map(|i| format!("wide_{i}")).collect();
    let mut csv = format!("record_id,category,n,{}\n", wide.join(","));
    let mut bad = 0;
    for i in 0..100 {
        let cells: Vec<String> = (0..37)
            .map(|c| match c {
                3 if i % 14 == 5 => {
                    bad += 1;
                    "oops".to_string()
                }
                3 => i.to_string(),
                _ => format!("v{i}_{c}"),
            })
            .collect();
        csv.push_str(&format!(
            "id{i},{},{i},{}\n",
            ["books", "toys"][i % 2],
            cells.join(",")
        ));
    }
    assert_eq!(bad, 7);
    wd.write("data.csv", csv);
    wd.write("cats.csv", "category,label\nbooks,Books\ntoys,Toys\n");
    let text = |sql: &str| {
        format!(
            r#"
[source]
paths = "data.csv"
schema = "wide_3 BIGINT"

[[lookup]]
name = "cats"
paths = "cats.csv"
on = "category"

[[enrich]]
name = "meta"
url = "{}"
[enrich.extract]
title = "/title"

[[transform]]
sql = "{sql}"

[sink]
path = "out"
mode = "overwrite"
"#,
            server.url("/meta/{record_id}")
        )
    };

    let report = run(
        &wd,
        text("SELECT record_id, label, title FROM source WHERE n < 30"),
        true,
    )
    .await
    .expect("report");
    assert_identity(&report);
    assert_eq!(report["rows_in"], 100, "{report:#}");
    assert_eq!(report["rows_rejected"], 0, "{report:#}");
    assert_eq!(report["rows_out"], 30, "{report:#}");
    assert_eq!(report["rows_removed_by_sql"], 70, "{report:#}");
    // The filter ran below the enrich stage: one call per row that passed it.
    assert_eq!(server.counters.requests.load(Ordering::SeqCst), 30);
    let rows = wd.ok(&[
        "query",
        "SELECT record_id, label, title FROM t ORDER BY record_id LIMIT 2",
        "-t",
        "t=out",
        "--output",
        "csv",
    ]);
    let expected_title = |id: &str| {
        meta_object(id)["title"]
            .as_str()
            .expect("title")
            .to_string()
    };
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        [
            "record_id,label,title".to_string(),
            format!("id0,Books,{}", expected_title("id0")),
            format!("id1,Toys,{}", expected_title("id1")),
        ]
    );

    // Reading every column decodes wide_3: its bad values are rejected.
    let report = run(&wd, text("SELECT * FROM source"), true)
        .await
        .expect("report");
    assert_identity(&report);
    assert_eq!(report["rows_rejected"], 7, "{report:#}");
    assert_eq!(report["rows_out"], 93, "{report:#}");
}

/// What the two-key test API answers for `/pair/{a}/{b}`.
fn pair_answer(a: &str, b: &str) -> serde_json::Value {
    let i = (a.chars().count() * 1000 + b.chars().count()) as i64;
    serde_json::json!({
        "s": format!("{a}|{b}"),
        "i": i,
        "d": i as f64 / 4.0,
        "ok": i % 2 == 0,
        "obj": { "a": a, "n": [i] },
    })
}

/// A URL with two columns, a NULL in one of them, and every extract type: each row gets
/// the answer to its own pair of values (computed here from the rows written, not read
/// back from sluice), rows with a NULL get NULLs without a call, and the API sees one call
/// per distinct pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_key_columns_and_every_extract_type_land_in_their_rows() {
    let server = ApiServer::start(|req: &Request| {
        let parts: Vec<String> = req
            .path
            .trim_start_matches("/pair/")
            .split('/')
            .map(sluice_testkit::percent_decode)
            .collect();
        match &parts[..] {
            [a, b] => Reply::json(200, pair_answer(a, b).to_string()),
            _ => Reply::status(404),
        }
    })
    .await;
    let wd = Arc::new(Workdir::new());
    let firsts = ["x", "é ü", "50%", "#tag", "a~b", "long-value-long-value"];
    let seconds = ["1", "22", "", "ñ", "q?r"];
    // 3000 rows; the empty second value is a NULL (an empty CSV field).
    let mut csv = String::from("a,b,n\n");
    let mut expected = Vec::new();
    for n in 0..3000usize {
        let a = firsts[(n * 7) % firsts.len()];
        let b = seconds[(n * 3 + n / 11) % seconds.len()];
        csv.push_str(&format!("{a},{b},{n}\n"));
        expected.push((a, (!b.is_empty()).then_some(b)));
    }
    wd.write("data.csv", csv);
    let text = format!(
        r#"
[source]
paths = "data.csv"

[[enrich]]
name = "pair"
url = "{}"
concurrency = 4

[enrich.extract]
s = "/s"
i = {{ path = "/i", type = "bigint" }}
d = {{ path = "/d", type = "double" }}
ok = {{ path = "/ok", type = "boolean" }}
obj = {{ path = "/obj", type = "json" }}

[sink]
path = "out"
mode = "overwrite"
"#,
        server.url("/pair/{a}/{b}")
    );
    let report = run(&wd, text, true).await.expect("report");
    assert_identity(&report);
    assert_eq!(report["rows_out"], 3000, "{report}");
    let with_null = expected.iter().filter(|(_, b)| b.is_none()).count() as u64;
    let pairs: std::collections::HashSet<_> = expected
        .iter()
        .filter_map(|(a, b)| b.map(|b| (*a, b)))
        .collect();
    let e = enrich_report(&report);
    assert_eq!(e["null_keys"], with_null, "{e}");
    assert_eq!(e["calls"], pairs.len() as u64, "{e}");
    assert_eq!(
        server.counters.requests.load(Ordering::SeqCst),
        pairs.len() as u64
    );
    let out = wd.ok(&[
        "query",
        "SELECT a, b, s, i, d, ok, obj FROM t ORDER BY n",
        "-t",
        "t=out",
        "--output",
        "ndjson",
    ]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows.len(), 3000);
    for (n, (row, (a, b))) in rows.iter().zip(&expected).enumerate() {
        assert_eq!(row["a"], *a, "row {n}");
        match b {
            None => {
                for c in ["b", "s", "i", "d", "ok", "obj"] {
                    assert!(row[c].is_null(), "row {n}: {c} should be NULL: {row}");
                }
            }
            Some(b) => {
                let want = pair_answer(a, b);
                assert_eq!(row["s"], want["s"], "row {n}");
                assert_eq!(row["i"], want["i"], "row {n}");
                assert_eq!(row["d"].as_f64(), want["d"].as_f64(), "row {n}");
                assert_eq!(row["ok"], want["ok"], "row {n}");
                let obj: serde_json::Value =
                    serde_json::from_str(row["obj"].as_str().expect("json text")).expect("obj");
                assert_eq!(obj, want["obj"], "row {n}");
            }
        }
    }
}

/// Kills a child process (a test's server) when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// HTTPS: a server whose certificate chains to a trusted root answers every call (the roots
/// are read at the first handshake: `SSL_CERT_FILE` names them here); the same server fails
/// the job with its certificate's fault when another root is trusted, or when it is called
/// by a name its certificate is not for. The server is `openssl s_server` on 127.0.0.1 with
/// certificates made by the test (Debian's openssl package: `.ci/run` installs it).
#[test]
fn https_servers_are_checked_against_the_trusted_roots() {
    let wd = Workdir::new();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(wd.root())
            .output()
            .expect("run openssl (Debian's openssl package; .ci/run installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    // Two authorities; the server's certificate is the first one's, for 127.0.0.1 only.
    for ca in ["ca", "other"] {
        let (key, crt, subject) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN=sluice test {ca}"),
        );
        let args = [
            &["req", "-x509"][..],
            &new_key,
            &[
                "-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subject,
            ],
        ]
        .concat();
        openssl(&args);
    }
    let args = [
        &["req", "-new"][..],
        &new_key,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat();
    openssl(&args);
    wd.write("san.ext", "subjectAltName=IP:127.0.0.1\n");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    // The answers, as files the server hands out.
    let keys = ids(5);
    for k in &keys {
        wd.write(&format!("www/{k}.json"), meta_object(k).to_string());
    }
    data(&wd, &keys, 10);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let _server = KillOnDrop(
        std::process::Command::new("openssl")
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-WWW"])
            .args(["-quiet", "-cert"])
            .arg(wd.path("server.crt"))
            .arg("-key")
            .arg(wd.path("server.key"))
            .current_dir(wd.path("www"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start openssl s_server"),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "openssl s_server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = |host: &str, roots: &str| {
        let url = format!("https://{host}:{port}/{{record_id}}.json");
        let extra = "concurrency = 1\nretries = 0\non_error = \"fail\"";
        wd.write("p.toml", pipeline(&url, extra));
        wd.sluice()
            .env("SSL_CERT_FILE", wd.path(roots))
            .env_remove("SSL_CERT_DIR")
            .args(["run", "p.toml", "--quiet"])
            .output()
            .expect("run sluice")
    };

    let out = run("127.0.0.1", "ca.crt");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows = output(&wd);
    assert_eq!(rows.len(), 10);
    for (id, title, owner, _) in &rows {
        assert_eq!(title.as_deref(), Some(format!("title-{id}").as_str()));
        assert_eq!(owner.as_deref(), Some(format!("owner-{id}").as_str()));
    }

    for (host, roots, fault) in [
        ("127.0.0.1", "other.crt", "UnknownIssuer"),
        ("localhost", "ca.crt", "not valid for name"),
    ] {
        let out = run(host, roots);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{host} {roots}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(fault), "{host} {roots}: {stderr}");
    }
}
