//! `sluice cluster`: a real scheduler and two real executors (the built binary, on loopback
//! ports) run queries planned by the client with sluice's own plan nodes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::workdir::Workdir;

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` on 127.0.0.1:`port`: the body, or `None` when nothing answers yet.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

/// One scheduler and two executors of the built binary; the scheduler's `df://` URL once
/// both executors have registered.
fn cluster(wd: &Workdir) -> (Vec<Running>, String) {
    let port = free_port();
    let spawn = |args: &[String], log: &str| {
        let log = std::fs::File::create(wd.path(log)).expect("log");
        Running(
            wd.sluice()
                .args(args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start a cluster process"),
        )
    };
    let mut procs = vec![spawn(
        &[
            "cluster".into(),
            "scheduler".into(),
            "--bind".into(),
            format!("127.0.0.1:{port}"),
        ],
        "scheduler.log",
    )];
    for i in 0..2 {
        let work = wd.path(&format!("executor-{i}"));
        std::fs::create_dir_all(&work).expect("mkdir");
        procs.push(spawn(
            &[
                "cluster".into(),
                "executor".into(),
                "--scheduler".into(),
                format!("df://127.0.0.1:{port}"),
                "--bind".into(),
                format!("127.0.0.1:{}", free_port()),
                "--grpc-port".into(),
                free_port().to_string(),
                "--slots".into(),
                "2".into(),
                "--work-dir".into(),
                work.display().to_string(),
            ],
            &format!("executor-{i}.log"),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let executors = http_get(port, "/api/executors")
            .map(|body| body.matches("\"id\"").count())
            .unwrap_or(0);
        if executors >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the executors did not register in 60 s (have {executors}); scheduler log: {}",
            std::fs::read_to_string(wd.path("scheduler.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (procs, format!("df://127.0.0.1:{port}"))
}

/// CSV files under odd paths (one gzipped, one big enough to be read in byte ranges): per
/// category, the rows and the sum of `v` the generator wrote.
fn inputs(wd: &Workdir) -> std::collections::BTreeMap<String, (u64, i64)> {
    let mut truth: std::collections::BTreeMap<String, (u64, i64)> = Default::default();
    let folders = ["in/a b", "in/ü #1", "in/pct%41", "in/日本"];
    for f in 0..12u64 {
        let rows = if f == 5 { 40_000 } else { 50 + f * 7 };
        let mut text = String::from("id,cat,v\n");
        for r in 0..rows {
            let cat = ["red", "green", "blue", ""][((r + f) % 4) as usize];
            let v = (r as i64 * 7 + f as i64 * 13) % 1000 - 300;
            text.push_str(&format!("{r},{cat},{v}\n"));
            let e = truth.entry(cat.to_string()).or_default();
            e.0 += 1;
            e.1 += v;
        }
        let path = format!("{}/part {f}.csv", folders[(f % 4) as usize]);
        if f == 7 {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(text.as_bytes()).expect("gz");
            wd.write(&format!("{path}.gz"), gz.finish().expect("gz"));
        } else {
            wd.write(&path, text);
        }
    }
    truth
}

const SQL: &str =
    "SELECT coalesce(cat, '') AS cat, count(*) AS n, sum(v) AS s FROM t GROUP BY cat ORDER BY cat";

#[test]
fn a_query_on_the_cluster_gives_the_local_answer() {
    let wd = Workdir::new();
    let truth = inputs(&wd);
    let (_procs, url) = cluster(&wd);
    let args = |cluster: Option<&str>| {
        let mut a: Vec<String> = [
            "query",
            SQL,
            "-t",
            "t=in",
            "--output",
            "csv",
            "--on-error",
            "fail",
            "--split-min-size",
            "65536",
            "--threads",
            "4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(url) = cluster {
            a.extend(["--cluster".to_string(), url.to_string()]);
        }
        a
    };
    let local = wd.ok(&args(None).iter().map(String::as_str).collect::<Vec<_>>());
    let remote = wd.ok(&args(Some(&url))
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert_eq!(remote, local, "the cluster's answer is the local one");
    let mut expected = String::from("cat,n,s\n");
    for (cat, (n, s)) in &truth {
        expected.push_str(&format!("{cat},{n},{s}\n"));
    }
    assert_eq!(remote, expected, "and the generator's");
    // The job ran on the cluster's executors.
    let jobs = http_get(
        url.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port"),
        "/api/jobs",
    )
    .unwrap_or_default();
    assert!(
        jobs.contains("Successful") || jobs.contains("successful") || jobs.contains("Completed"),
        "{jobs}"
    );
}

#[test]
fn a_bad_row_fails_the_cluster_job_with_its_file_and_line() {
    let wd = Workdir::new();
    inputs(&wd);
    wd.write("in/a b/late.csv", "id,cat,v\n1,red,5\n2,red,5,extra\n");
    let (_procs, url) = cluster(&wd);
    let out = wd
        .sluice()
        .args([
            "query",
            SQL,
            "-t",
            "t=in",
            "--output",
            "csv",
            "--on-error",
            "fail",
            "--cluster",
            &url,
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("late.csv:3"), "{err}");
    assert!(out.stdout.is_empty());
}

/// The rejects of a query's run: (file, line, kind) of each, sorted.
fn rejects_in(wd: &Workdir, dir: &str) -> Vec<(String, u64, String)> {
    let mut out: Vec<(String, u64, String)> = wd
        .read(&format!("{dir}/t/rejects.ndjson"))
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                r["file"].as_str().unwrap_or_default().to_string(),
                r["line"].as_u64().unwrap_or_default(),
                r["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn rows_rejected_or_skipped_on_the_executors_come_back_counted_with_their_lines() {
    let wd = Workdir::new();
    inputs(&wd);
    // Bad rows the generator knows: a big file read in byte ranges (a row with a field too
    // many every 5,000th line), and a small one.
    let mut big = String::from("id,cat,v\n");
    let mut bad: Vec<(String, u64, String)> = Vec::new();
    for r in 0..30_000u64 {
        if r % 5000 == 4999 {
            big.push_str(&format!("{r},red,1,extra\n"));
            bad.push((
                "in/ü #1/bad big.csv".into(),
                r + 2,
                "too_many_fields".into(),
            ));
        } else {
            big.push_str(&format!("{r},blue,2\n"));
        }
    }
    wd.write("in/ü #1/bad big.csv", big);
    wd.write("in/a b/late.csv", "id,cat,v\n1,red,5\n2,red\n");
    bad.push(("in/a b/late.csv".into(), 3, "too_few_fields".into()));
    bad.sort();
    let (_procs, url) = cluster(&wd);
    let run = |mode: &str, rejects: &str, cluster: bool| {
        let mut args = vec![
            "query",
            SQL,
            "-t",
            "t=in",
            "--output",
            "csv",
            "--on-error",
            mode,
            "--rejects",
            rejects,
            "--split-min-size",
            "65536",
            "--threads",
            "4",
        ];
        if cluster {
            args.extend(["--cluster", url.as_str()]);
        }
        let out = wd.sluice().args(&args).output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (local, local_err) = run("reject", "rejects-local", false);
    let (remote, remote_err) = run("reject", "rejects-cluster", true);
    assert_eq!(remote, local);
    let line = format!("{} row(s) rejected", bad.len());
    assert!(local_err.contains(&line), "{local_err}");
    assert!(remote_err.contains(&line), "{remote_err}");
    assert_eq!(rejects_in(&wd, "rejects-local"), bad);
    assert_eq!(
        rejects_in(&wd, "rejects-cluster"),
        bad,
        "the executors' rejects, joined"
    );
    let left: Vec<String> = std::fs::read_dir(wd.path("rejects-cluster/t"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        ["rejects.ndjson"],
        "task files are joined and removed"
    );

    let (skipped, skip_err) = run("skip", "rejects-skip", true);
    assert_eq!(skipped, local);
    assert!(
        skip_err.contains(&format!("{} bad row(s) skipped", bad.len())),
        "{skip_err}"
    );
}
