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

    // Modes that keep going on bad rows need the rows back from the executors: refused.
    let err = wd.fails(&["query", SQL, "-t", "t=in", "--cluster", &url], 1);
    assert!(err.contains("--cluster needs --on-error fail"), "{err}");
}
