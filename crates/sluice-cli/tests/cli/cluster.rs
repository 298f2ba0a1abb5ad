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
    cluster_with(wd, &[], &["--slots", "2"])
}

/// [`cluster_with`], every process with `env` set too.
fn cluster_env(
    wd: &Workdir,
    scheduler_args: &[&str],
    executor_args: &[&str],
    env: &[(&str, &str)],
) -> (Vec<Running>, String) {
    CLUSTER_ENV.with(|e| {
        *e.borrow_mut() = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    let started = cluster_with(wd, scheduler_args, executor_args);
    CLUSTER_ENV.with(|e| e.borrow_mut().clear());
    started
}

thread_local! {
    /// Environment of the cluster processes [`cluster_with`] starts on this thread.
    static CLUSTER_ENV: std::cell::RefCell<Vec<(String, String)>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A command the first executor [`cluster_with`] starts on this thread runs under (the
    /// binary and its arguments follow it).
    static FIRST_EXECUTOR_UNDER: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`cluster`] with more arguments for the scheduler and for each executor. A process that
/// exits while the cluster starts (a port another test took between our probe and its bind)
/// is started again on other ports.
fn cluster_with(
    wd: &Workdir,
    scheduler_args: &[&str],
    executor_args: &[&str],
) -> (Vec<Running>, String) {
    let spawn = |args: Vec<String>, log: &str, under: Vec<String>| {
        let log = std::fs::File::create(wd.path(log)).expect("log");
        let mut cmd = wd.sluice();
        if let Some((program, rest)) = under.split_first() {
            let binary = cmd.get_program().to_owned();
            cmd = std::process::Command::new(program);
            cmd.args(rest).arg(binary).current_dir(wd.root());
        }
        CLUSTER_ENV.with(|e| {
            for (k, v) in e.borrow().iter() {
                cmd.env(k, v);
            }
        });
        Running(
            cmd.args(args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start a cluster process"),
        )
    };
    let scheduler = |port: u16| {
        let mut args: Vec<String> = vec![
            "cluster".into(),
            "scheduler".into(),
            "--bind".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(scheduler_args.iter().map(|a| a.to_string()));
        spawn(args, "scheduler.log", Vec::new())
    };
    let executor = |port: u16, i: usize| {
        let work = wd.path(&format!("executor-{i}"));
        std::fs::create_dir_all(&work).expect("mkdir");
        let mut args: Vec<String> = vec![
            "cluster".into(),
            "executor".into(),
            "--scheduler".into(),
            format!("df://127.0.0.1:{port}"),
            "--bind".into(),
            format!("127.0.0.1:{}", free_port()),
            "--grpc-port".into(),
            free_port().to_string(),
            "--work-dir".into(),
            work.display().to_string(),
        ];
        args.extend(executor_args.iter().map(|a| a.to_string()));
        let under = match i {
            0 => FIRST_EXECUTOR_UNDER.with(|u| u.borrow().clone()),
            _ => Vec::new(),
        };
        spawn(args, &format!("executor-{i}.log"), under)
    };
    let mut port = free_port();
    let mut procs = vec![scheduler(port), executor(port, 0), executor(port, 1)];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if procs[0].0.try_wait().ok().flatten().is_some() {
            port = free_port();
            procs = vec![scheduler(port), executor(port, 0), executor(port, 1)];
        }
        for i in 0..2 {
            if procs[i + 1].0.try_wait().ok().flatten().is_some() {
                procs[i + 1] = executor(port, i);
            }
        }
        let executors = http_get(port, "/api/executors")
            .map(|body| body.matches("\"id\"").count())
            .unwrap_or(0);
        if executors >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the executors did not register in 90 s (have {executors}); scheduler log: {}",
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

/// Jobs the cluster at `url` ran to success (its scheduler's REST API).
fn jobs_done(url: &str) -> usize {
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let jobs = http_get(port, "/api/jobs").unwrap_or_default();
    let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap_or_default();
    jobs.as_array()
        .map(|all| {
            all.iter()
                .filter(|j| {
                    let status = j["job_status"].as_str().or(j["status"].as_str());
                    status.is_some_and(|s| {
                        let s = s.to_ascii_lowercase();
                        s.contains("success") || s.contains("completed")
                    })
                })
                .count()
        })
        .unwrap_or(0)
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
    assert_eq!(jobs_done(&url), 1, "the job ran on the cluster's executors");
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

/// The rejects file `path`: (file, line, kind) of each row, sorted; none when it is absent.
fn rejects_at(wd: &Workdir, path: &str) -> Vec<(String, u64, String)> {
    if !wd.path(path).exists() {
        return Vec::new();
    }
    let mut out: Vec<(String, u64, String)> = wd
        .read(path)
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

/// The rejects of a query's run of table `t`.
fn rejects_in(wd: &Workdir, dir: &str) -> Vec<(String, u64, String)> {
    rejects_at(wd, &format!("{dir}/t/rejects.ndjson"))
}

#[test]
fn rows_rejected_or_skipped_on_the_executors_come_back_counted_with_their_lines() {
    let wd = Workdir::new();
    inputs(&wd);
    let bad = bad_inputs(&wd);
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

/// Bad rows the generator wrote into the inputs ([`inputs`]): a big file read in byte
/// ranges with a row a field too many every 5,000th line, and a small file with a row a
/// field short. (file, line, kind) of each, sorted.
fn bad_inputs(wd: &Workdir) -> Vec<(String, u64, String)> {
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
    bad
}

/// Per category, the rows and the sum of `v` the generator wrote.
type Truth = std::collections::BTreeMap<String, (u64, i64)>;

/// [`inputs`] and [`bad_inputs`]: per category the rows and sum of `v` of every good row,
/// and the bad rows.
fn good_and_bad_inputs(wd: &Workdir) -> (Truth, Vec<(String, u64, String)>) {
    let mut truth = inputs(wd);
    let bad = bad_inputs(wd);
    // What bad_inputs wrote besides its bad rows: 29,994 blue rows of v = 2, one red of 5.
    for (cat, n, s) in [("blue", 29_994, 59_988), ("red", 1, 5)] {
        let e = truth.entry(cat.to_string()).or_default();
        e.0 += n;
        e.1 += s;
    }
    (truth, bad)
}

/// A cluster (two slots per executor) whose processes have moto's credentials in their
/// environment, and `env` besides.
fn s3_cluster(wd: &Workdir, env: &[(&str, &str)]) -> (Vec<Running>, String) {
    let mut all = vec![
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing-secret-key"),
    ];
    all.extend_from_slice(env);
    cluster_env(wd, &[], &["--slots", "2"], &all)
}

/// The rejects of a run's output folder.
fn output_rejects(wd: &Workdir, out: &str) -> Vec<(String, u64, String)> {
    rejects_at(wd, &format!("{out}/_rejects/rejects.ndjson"))
}

/// `sluice run FILE --report-json ... --quiet EXTRA...` in `wd`: the report.
fn run_report(wd: &Workdir, file: &str, extra: &[&str]) -> serde_json::Value {
    let report = format!("{file}.report.json");
    let mut args = vec!["run", file, "--report-json", &report, "--quiet"];
    args.extend_from_slice(extra);
    wd.ok(&args);
    serde_json::from_str(&wd.read(&report)).expect("report")
}

/// The report's counts that must not depend on where the job ran.
fn counts(report: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    [
        "rows_in",
        "rows_out",
        "rows_rejected",
        "rows_skipped",
        "rows_added_by_sql",
        "rows_removed_by_sql",
        "rows_rejected_by_enrich",
        "rows_rejected_at_write",
        "files_read",
        "rows_unread",
    ]
    .iter()
    .map(|k| (k.to_string(), report[*k].clone()))
    .chain(std::iter::once((
        "files".to_string(),
        report["files"].clone(),
    )))
    .collect()
}

#[test]
fn a_pipeline_on_the_cluster_writes_the_local_output_rejects_and_report() {
    let wd = Workdir::new();
    let (mut truth, mut bad) = good_and_bad_inputs(&wd);
    // Drift: a file with its columns in another order and one more.
    let mut drift = String::from("v,extra,cat,id\n");
    for i in 1..=10i64 {
        drift.push_str(&format!("{i},x{i},green,{}\n", 900 + i));
        let e = truth.entry("green".to_string()).or_default();
        e.0 += 1;
        e.1 += i;
    }
    wd.write("in/a b/drift.csv", drift);
    // A lookup that knows three of the four categories: rows of the fourth ('', read as
    // NULL) are rejected by the lookup, with their file and line.
    wd.write("cats.csv", "cat,label\nred,Red\ngreen,Green\nblue,Blue\n");
    let (_procs, url) = cluster(&wd);
    let pipeline = |out: &str| {
        format!(
            "[source]\npaths = \"in\"\non_error = \"reject\"\nsplit_min_size = 65536\n\
             union_by_name = true\n\
             [[lookup]]\nname = \"cats\"\npaths = \"cats.csv\"\non = \"cat\"\n\
             columns = [\"label\"]\non_missing = \"reject\"\n\
             [[transform]]\nsql = \"SELECT cat, label, count(*) AS n, sum(v) AS s FROM source GROUP BY cat, label\"\n\
             [sink]\npath = \"{out}\"\npartition_by = [\"cat\"]\n[settings]\nthreads = 4\n"
        )
    };
    wd.write("local.toml", pipeline("out-local"));
    wd.write("cluster.toml", pipeline("out-cluster"));
    let run = |file: &str, extra: &[&str]| run_report(&wd, file, extra);
    let local = run("local.toml", &[]);
    let remote = run("cluster.toml", &["--cluster", &url]);
    assert_eq!(jobs_done(&url), 1, "the job ran on the cluster's executors");
    crate::rejects::assert_identity(&remote);
    assert_eq!(counts(&remote), counts(&local), "{remote}");

    // The generator's counts: every row in; '' rows rejected by the lookup, bad rows by the
    // read, the rest summed up per category.
    let generated: u64 = truth.values().map(|(n, _)| n).sum::<u64>() + bad.len() as u64;
    assert_eq!(remote["rows_in"], generated, "{remote}");
    let no_cat = truth.get("").map(|(n, _)| *n).unwrap_or(0);
    assert_eq!(
        remote["rows_rejected"],
        bad.len() as u64 + no_cat,
        "{remote}"
    );
    // The lookup's figures come from the executors' tasks.
    for k in ["matched", "missing", "rows"] {
        assert_eq!(
            remote["lookups"][0][k], local["lookups"][0][k],
            "{k}: {remote}"
        );
    }
    assert_eq!(remote["lookups"][0]["missing"], no_cat, "{remote}");
    let sql = "SELECT cat, label, n, s FROM t ORDER BY cat";
    let written = |out: &str| wd.query(sql, &[("t", out)]);
    assert_eq!(written("out-cluster"), written("out-local"));
    let mut expected = vec!["cat,label,n,s".to_string()];
    for (cat, (n, s)) in truth.iter().filter(|(c, _)| !c.is_empty()) {
        let mut label = cat.clone();
        label[..1].make_ascii_uppercase();
        expected.push(format!("{cat},{label},{n},{s}"));
    }
    assert_eq!(written("out-cluster"), expected, "the generator's sums");

    // The same rejects, with their files and lines: the read's and the lookup's.
    let rejects = output_rejects(&wd, "out-cluster");
    let local_rejects = output_rejects(&wd, "out-local");
    let only_remote: Vec<_> = rejects
        .iter()
        .filter(|r| !local_rejects.contains(r))
        .collect();
    let only_local: Vec<_> = local_rejects
        .iter()
        .filter(|r| !rejects.contains(r))
        .collect();
    assert_eq!(
        rejects, local_rejects,
        "cluster only: {only_remote:?}, local only: {only_local:?}"
    );
    assert_eq!(
        rejects.iter().filter(|r| r.2 == "lookup_missing").count() as u64,
        no_cat,
        "{rejects:?}"
    );
    bad.retain(|b| !rejects.contains(b));
    assert!(bad.is_empty(), "bad rows missing from the rejects: {bad:?}");
    // Committed like a local run: a manifest, no staging or ledger files left behind.
    assert!(wd.path("out-cluster/_SUCCESS").exists());
    let leftovers: Vec<String> = walk(&wd.path("out-cluster"))
        .into_iter()
        .filter(|p| p.contains(".ledger") || p.contains("/.stage-") || p.contains("/.task-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        wd.staging_leftovers().is_empty(),
        "{:?}",
        wd.staging_leftovers()
    );
}

/// An output on an object store from a cluster: each task uploads its files under their
/// final names and its books (ledger, rejected rows) below a job prefix, the client reads
/// the books back and publishes the manifest. The output, the rejects (file, line, kind)
/// and the report equal the local run's; nothing of the job stays beside the output.
#[test]
fn s3_outputs_on_the_cluster_commit_like_local_ones() {
    let Some(moto) = sluice_testkit::moto::Moto::start(&[]) else {
        return;
    };
    moto.bucket("bkt");
    let wd = Workdir::new();
    let (truth, bad) = good_and_bad_inputs(&wd);
    let (_procs, url) = s3_cluster(&wd, &[]);
    let storage = [
        format!("endpoint={}", moto.endpoint()),
        "allow_http=true".to_string(),
        "region=us-east-1".to_string(),
        "access_key_id=testing".to_string(),
        "secret_access_key=testing-secret-key".to_string(),
    ];
    let pipeline = |out: &str| {
        format!(
            "[source]\npaths = \"in\"\non_error = \"reject\"\nsplit_min_size = 65536\n\
             [sink]\npath = \"s3://bkt/{out}\"\npartition_by = [\"cat\"]\n[settings]\nthreads = 4\n\
             [storage]\n{}\n",
            storage
                .iter()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("k=v");
                    format!("{k} = \"{v}\"")
                })
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    wd.write("local.toml", pipeline("out local é"));
    wd.write("cluster.toml", pipeline("out cluster é"));
    let local = run_report(&wd, "local.toml", &[]);
    let remote = run_report(&wd, "cluster.toml", &["--cluster", &url]);
    assert_eq!(jobs_done(&url), 1, "the job ran on the cluster's executors");
    crate::rejects::assert_identity(&remote);
    assert_eq!(counts(&remote), counts(&local), "{remote}");
    let generated: u64 = truth.values().map(|(n, _)| n).sum::<u64>() + bad.len() as u64;
    assert_eq!(remote["rows_in"], generated, "{remote}");
    assert_eq!(remote["rows_rejected"], bad.len() as u64, "{remote}");
    // Read back through the manifest, both outputs hold the generator's rows.
    let back = |out: &str, to: &str| {
        let mut args = vec!["ingest".to_string(), format!("s3://bkt/{out}/")];
        args.extend(["--to".into(), to.into(), "--quiet".into()]);
        for kv in &storage {
            args.extend(["--storage-option".into(), kv.clone()]);
        }
        wd.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        wd.query(
            "SELECT cat, count(*) AS n, sum(v) AS s FROM t GROUP BY cat ORDER BY cat",
            &[("t", to)],
        )
    };
    let written = back("out cluster é", "back-cluster");
    assert_eq!(written, back("out local é", "back-local"));
    assert_eq!(written.len(), 1 + truth.len(), "{written:?}");
    // The same rejected rows, with their files and lines.
    let rejects = |out: &str| {
        let text = moto.get("bkt", &format!("{out}/_rejects/rejects.ndjson"));
        wd.write(&format!("{out}.rejects.ndjson"), text);
        rejects_at(&wd, &format!("{out}.rejects.ndjson"))
    };
    let on_cluster = rejects("out cluster é");
    assert_eq!(on_cluster, rejects("out local é"));
    let mut missing = bad.clone();
    missing.retain(|b| !on_cluster.contains(b));
    assert!(
        missing.is_empty(),
        "bad rows missing from the rejects: {missing:?}"
    );
    // Only the manifest's files, the manifest and the rejects stay: no books, no ledgers.
    let keys = moto.keys("bkt", "out cluster é/");
    let manifest: serde_json::Value =
        serde_json::from_str(&moto.get("bkt", "out cluster é/_SUCCESS")).expect("manifest");
    let listed = manifest["files"].as_array().map_or(0, Vec::len);
    assert!(listed >= truth.len(), "{manifest}");
    let others: Vec<&String> = keys
        .iter()
        .filter(|k| !k.ends_with(".parquet"))
        .filter(|k| !k.ends_with("/_SUCCESS") && !k.contains("/_rejects/"))
        .collect();
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(
        keys.iter().filter(|k| k.ends_with(".parquet")).count(),
        listed,
        "{keys:?}"
    );
    // A job that fails (a bad row, on_error = "fail") commits nothing: no manifest, no data
    // file. A task that finishes after the failure may still upload its ledger below the
    // books prefix (seen in CI); that is no output: the job runs again into the same
    // folder (mode "error") and commits.
    wd.write(
        "failing.toml",
        pipeline("out failed").replace("on_error = \"reject\"", "on_error = \"fail\""),
    );
    let err = wd.fails(&["run", "failing.toml", "--quiet", "--cluster", &url], 1);
    assert!(
        err.contains("bad big.csv") || err.contains("late.csv"),
        "{err}"
    );
    let left: Vec<String> = moto
        .keys("bkt", "out failed/")
        .into_iter()
        .filter(|k| !k.starts_with("out failed/.sluice-books-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    wd.write("again.toml", pipeline("out failed"));
    let again = run_report(&wd, "again.toml", &["--cluster", &url]);
    assert_eq!(counts(&again), counts(&local), "{again}");
    // Appending adds the job's files to the manifest (every sum doubles) and keeps the
    // earlier rejects beside the new ones; overwriting leaves exactly the new job's files.
    for (mode, times) in [("append", 2), ("overwrite", 1)] {
        let toml = format!("{mode}.toml");
        let text =
            pipeline("out failed").replace("[sink]\n", &format!("[sink]\nmode = \"{mode}\"\n"));
        wd.write(&toml, text);
        let report = run_report(&wd, &toml, &["--cluster", &url]);
        assert_eq!(counts(&report), counts(&local), "{mode}: {report}");
        let got = back("out failed", &format!("back-{mode}"));
        assert_eq!(got.len(), written.len(), "{mode}: {got:?}");
        for (g, w) in got.iter().zip(&written).skip(1) {
            let g: Vec<&str> = g.split(',').collect();
            let w: Vec<&str> = w.split(',').collect();
            assert_eq!(g[0], w[0], "{mode}");
            for i in 1..3 {
                let (g, w): (i64, i64) = (g[i].parse().expect("n"), w[i].parse().expect("n"));
                assert_eq!(g, w * times, "{mode}: {got:?} vs {written:?}");
            }
        }
        let rejects_files = moto
            .keys("bkt", "out failed/_rejects/")
            .iter()
            .filter(|k| k.ends_with(".ndjson"))
            .count();
        assert_eq!(rejects_files, times as usize, "{mode}");
    }
    // One object: one task concatenates the partitions in order (regression: its task was
    // given only the first partition, and the ledger refused the commit with "rows
    // unaccounted"); its file takes the target's name once the books are checked. The
    // rows keep the input's order, as locally.
    let single = |out: &str| {
        pipeline(out)
            .replace("partition_by = [\"cat\"]\n", "")
            .replace(out, &format!("{out}.csv"))
    };
    wd.write("single-local.toml", single("one local é"));
    wd.write("single-cluster.toml", single("one cluster é"));
    let local = run_report(&wd, "single-local.toml", &[]);
    let remote = run_report(&wd, "single-cluster.toml", &["--cluster", &url]);
    assert_eq!(counts(&remote), counts(&local), "{remote}");
    let text = moto.get("bkt", "one cluster é.csv");
    assert_eq!(text, moto.get("bkt", "one local é.csv"));
    assert_eq!(
        text.lines().count() as u64,
        1 + generated - bad.len() as u64
    );
    let left: Vec<String> = moto
        .keys("bkt", "one cluster é.csv")
        .into_iter()
        .filter(|k| k != "one cluster é.csv" && !k.starts_with("one cluster é.csv_rejects/"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let text = moto.get("bkt", "one cluster é.csv_rejects/rejects.ndjson");
    wd.write("single.rejects.ndjson", text);
    assert_eq!(rejects_at(&wd, "single.rejects.ndjson"), on_cluster);
    // The same on a shared folder, and `--files 1`.
    for (out, extra) in [("one-shared.csv", ""), ("one-folder", "\nfiles = 1")] {
        let text = pipeline("x")
            .replace("partition_by = [\"cat\"]", extra)
            .replace("s3://bkt/x", out);
        wd.write("shared.toml", &text);
        let shared = run_report(&wd, "shared.toml", &["--cluster", &url]);
        assert_eq!(counts(&shared), counts(&local), "{out}: {shared}");
    }
    assert_eq!(
        wd.read("one-shared.csv"),
        moto.get("bkt", "one local é.csv")
    );
    let files = wd.data_files("one-folder");
    let parts: Vec<&String> = files
        .iter()
        .filter(|f| !f.starts_with("_rejects"))
        .collect();
    assert_eq!(parts.len(), 1, "{files:?}");
}

/// Every file under `dir`, as paths.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// An executor that does not see the client's files at their paths — here its own empty
/// folders mounted over the inputs and the output (a mount namespace of its own, as on a
/// machine without the shared storage), with another `a00.csv` where the client's is —
/// fails the job before it reads a row, in one line naming it and the path; nothing is
/// committed. Needs `unshare` and `mount` (root, as in CI): without them the test fails.
#[test]
fn an_executor_that_sees_other_files_fails_the_job_in_one_line() {
    let wd = Workdir::new();
    for i in 0..12 {
        wd.write(&format!("in/a{i:02}.csv"), format!("id,v\n{i},1\n{i},2\n"));
        wd.write(&format!("in2/b{i:02}.csv"), format!("id,v\n{i},1\n"));
    }
    std::fs::create_dir_all(wd.path("out")).expect("mkdir");
    let script = "mount -t tmpfs none \"$1\" && mount -t tmpfs none \"$2\" && \
                  printf 'id,v\\n' > \"$1/a00.csv\" && shift 2 && exec \"$@\"";
    FIRST_EXECUTOR_UNDER.with(|u| {
        *u.borrow_mut() = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([wd.path("in"), wd.path("out")].map(|p| p.display().to_string()))
        .collect()
    });
    // One slot each: the job's first tasks go to both executors.
    let (_procs, url) = cluster_with(&wd, &[], &["--slots", "1"]);
    FIRST_EXECUTOR_UNDER.with(|u| u.borrow_mut().clear());
    let blind = {
        let log = wd.read("executor-0.log");
        assert!(
            !log.contains("mount:"),
            "the executor's mounts failed: {log}"
        );
        log
    };
    let ingest = |input: &str, out: &str| {
        wd.fails(
            &[
                "ingest",
                input,
                "--to",
                out,
                "--threads",
                "6",
                "--cluster",
                &url,
            ],
            1,
        )
    };
    let err = ingest("in", "out2");
    assert_eq!(err.trim().lines().count(), 1, "{err}\n{blind}");
    assert!(
        err.contains("executor 127.0.0.1:")
            && err.contains("sees another in/a00.csv: 5 bytes where the client's has 13")
            && err.contains("every executor must see the job's inputs and outputs"),
        "{err}"
    );
    assert!(!wd.path("out2").exists(), "nothing committed");
    // The output goes into the folder the executor sees as its own empty one.
    let err = ingest("in2", "out/new");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot find the job's folder") && err.contains("/out/"),
        "{err}"
    );
    // Nothing committed: no out/new, and no file under out but in a job's hidden staging
    // folder (a task still running on the executor that sees the folder may leave files
    // there after the client removed it; like a killed job's, that folder is removed by
    // the next job that writes `out/new`).
    assert!(!wd.path("out/new").exists(), "nothing committed");
    let outside: Vec<String> = wd
        .data_files("out")
        .into_iter()
        .filter(|f| !f.starts_with(".sluice-staging-new-"))
        .collect();
    assert!(outside.is_empty(), "nothing committed: {outside:?}");
}

/// What a cluster cannot run as the local run would yet is refused up front, in one line,
/// before anything is written: a database output.
#[test]
fn what_the_cluster_cannot_run_yet_is_refused_in_one_line() {
    let wd = Workdir::new();
    wd.write("in/a.csv", "id\n1\n");
    let err = wd.fails(
        &[
            "ingest",
            "in",
            "--to",
            "postgres://nobody@127.0.0.1:9/db",
            "--table",
            "t",
            "--cluster",
            "df://127.0.0.1:9",
        ],
        1,
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not to a database"), "{err}");
    assert!(!wd.path("out").exists());
}

/// The staging folder's ledger files of a run writing to `out` in `wd`: (path, pid of the
/// executor that wrote it).
fn ledgers_written(wd: &Workdir) -> Vec<(String, u32)> {
    walk(wd.root())
        .into_iter()
        .filter(|p| p.ends_with(".ledger.json") && p.contains("/.stage-"))
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some((p, v["pid"].as_u64()? as u32))
        })
        .collect()
}

/// An executor killed in the middle of a job: the scheduler notices it is gone, runs its
/// tasks again on the other one (those that were running, and those that had finished but
/// whose output it held), and the job's output, rejects and report are still exactly the
/// local run's: the runs of a task that did not count are not counted.
#[test]
fn an_executor_killed_mid_job_leaves_the_output_and_ledger_exact() {
    let wd = Workdir::new();
    // Many files, each a task of its own, so that the job is still running when one
    // executor dies; bad rows in some of them.
    let mut rows = 0u64;
    let mut bad = 0u64;
    for f in 0..48u64 {
        let mut text = String::from("id,cat,v\n");
        for r in 0..20_000u64 {
            if r % 4999 == 4998 && f % 3 == 0 {
                text.push_str(&format!("{r},red\n"));
                bad += 1;
            } else {
                text.push_str(&format!(
                    "{r},{},{}\n",
                    ["a", "b", "c"][(r % 3) as usize],
                    r % 97
                ));
            }
            rows += 1;
        }
        wd.write(&format!("in/part {f:02}.csv"), text);
    }
    let pipeline = |out: &str| {
        format!(
            "[source]\npaths = \"in\"\nsplit_min_size = 100000000\n\
             [[transform]]\nsql = \"SELECT cat, v, id FROM source WHERE v <> 13\"\n\
             [sink]\npath = \"{out}\"\npartition_by = [\"cat\"]\n[settings]\nthreads = 48\n"
        )
    };
    wd.write("local.toml", pipeline("out-local"));
    wd.write("cluster.toml", pipeline("out-cluster"));
    let local = {
        wd.ok(&[
            "run",
            "local.toml",
            "--report-json",
            "local.json",
            "--quiet",
        ]);
        serde_json::from_str::<serde_json::Value>(&wd.read("local.json")).expect("report")
    };
    assert_eq!(local["rows_in"], rows);
    assert_eq!(local["rows_rejected"], bad);

    let (mut procs, url) = cluster_with(
        &wd,
        &["--executor-timeout", "3"],
        &["--slots", "1", "--heartbeat", "1"],
    );
    let mut job = wd
        .sluice()
        .args([
            "run",
            "cluster.toml",
            "--cluster",
            &url,
            "--report-json",
            "cluster.json",
            "--quiet",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the job");
    // Once an executor has finished a task, it is killed: its task's output is lost with
    // it, and whatever it runs then fails.
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let executors: Vec<u32> = procs[1..].iter().map(|p| p.0.id()).collect();
        if let Some((_, pid)) = ledgers_written(&wd)
            .into_iter()
            .find(|(_, pid)| executors.contains(pid))
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "no task finished in 60 s: {:?}",
            job.try_wait()
        );
        assert!(
            job.try_wait().expect("job").is_none(),
            "the job ended before an executor could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let at = procs
        .iter()
        .position(|p| p.0.id() == victim)
        .expect("the executor");
    drop(procs.remove(at)); // kills it
    let status = job.wait().expect("job");
    let mut err = String::new();
    if let Some(mut e) = job.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "the job failed: {err}");
    // The scheduler lost the executor and ran its tasks again, among them the one that had
    // written its ledger (reported finished or not yet: the map stages' output is still
    // needed, since the write waits for all of them).
    let log = wd.read("scheduler.log");
    assert!(
        log.contains("Reset") && log.contains("on lost Executor"),
        "{log}"
    );
    let remote: serde_json::Value = serde_json::from_str(&wd.read("cluster.json")).expect("report");
    crate::rejects::assert_identity(&remote);
    assert_eq!(counts(&remote), counts(&local), "{remote}");
    let sql =
        "SELECT cat, count(*) AS n, sum(v) AS s, sum(id) AS i FROM t GROUP BY cat ORDER BY cat";
    assert_eq!(
        wd.query(sql, &[("t", "out-cluster")]),
        wd.query(sql, &[("t", "out-local")])
    );
    assert_eq!(
        output_rejects(&wd, "out-cluster"),
        output_rejects(&wd, "out-local")
    );
    assert!(wd.path("out-cluster/_SUCCESS").exists());
}

/// An enrich stage on the cluster against a loopback API with faults (500s and 429s on first
/// calls, permanent 404s): the rows reach the stage hash-partitioned by its key, so each key
/// is called by one task only, and the stage's concurrency is divided among its tasks. The
/// API's own counters show the same calls per key as the local run's (one per key, two for
/// keys that failed once), never more in flight than the stage's concurrency, no retry
/// before its Retry-After; output, rejects and report are the local run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_on_the_cluster_calls_each_key_once_within_the_stage_s_concurrency() {
    use sluice_testkit::{faulty_api, ApiServer, Fate, Faults};
    let faults = Faults {
        error_500: 0.03,
        too_many: 0.01,
        retry_after_s: 1,
        missing: 0.02,
        seed: 7,
    };
    let (local_api, local_early) = faulty_api(Duration::from_millis(5), faults);
    let (cluster_api, cluster_early) = faulty_api(Duration::from_millis(5), faults);
    let local_server = ApiServer::start(local_api).await;
    let cluster_server = ApiServer::start(cluster_api).await;
    let wd = std::sync::Arc::new(Workdir::new());
    // 8 files of 1,000 rows over 1,000 keys: every key in several files, so several tasks
    // of the read see it.
    let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
    for f in 0..8 {
        let mut text = String::from("record_id,n\n");
        for r in 0..1000 {
            let key = &keys[(r * 7 + f * 131) % 1000];
            text.push_str(&format!("{key},{}\n", f * 1000 + r));
        }
        wd.write(&format!("in/part {f}.csv"), text);
    }
    let pipeline = |url: &str, out: &str| {
        format!(
            "[source]\npaths = \"in\"\n\
             [[enrich]]\nname = \"meta\"\nurl = \"{url}\"\nconcurrency = 8\nretries = 3\n\
             backoff = \"5ms\"\n[enrich.extract]\ntitle = \"/title\"\n\
             [sink]\npath = \"{out}\"\n[settings]\nthreads = 4\n"
        )
    };
    wd.write(
        "local.toml",
        pipeline(&local_server.url("/meta/{record_id}"), "out-local"),
    );
    wd.write(
        "cluster.toml",
        pipeline(&cluster_server.url("/meta/{record_id}"), "out-cluster"),
    );
    let w = std::sync::Arc::clone(&wd);
    let (local, remote, jobs) = tokio::task::spawn_blocking(move || {
        let run = |file: &str, extra: &[&str]| run_report(&w, file, extra);
        let local = run("local.toml", &[]);
        let (_procs, url) = cluster(&w);
        let remote = run("cluster.toml", &["--cluster", &url]);
        (local, remote, jobs_done(&url))
    })
    .await
    .expect("runs");
    assert_eq!(jobs, 1, "the job ran on the cluster");
    crate::rejects::assert_identity(&remote);
    assert_eq!(counts(&remote), counts(&local), "{remote}");
    let fate = |k: &str| faults.fate(k);
    let missing = keys.iter().filter(|k| fate(k) == Fate::Missing).count() as u64;
    assert!(missing > 0 && keys.iter().any(|k| fate(k) == Fate::TooMany));
    assert_eq!(remote["rows_rejected"], 8 * missing, "{remote}");
    // The API's counts: each key as often as locally, and as its fate says.
    let per_key = |server: &ApiServer| -> std::collections::BTreeMap<String, u64> {
        server.counters.per_target().into_iter().collect()
    };
    let calls = per_key(&cluster_server);
    assert_eq!(calls, per_key(&local_server));
    assert_eq!(calls.len(), keys.len());
    for (target, n) in &calls {
        let key = target.rsplit('/').next().unwrap_or_default();
        let expected = match fate(key) {
            Fate::Ok | Fate::Missing => 1,
            Fate::Error500 | Fate::TooMany => 2,
        };
        assert_eq!(*n, expected, "{target}");
    }
    let in_flight = cluster_server
        .counters
        .max_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(in_flight <= 8, "{in_flight} requests in flight at once");
    assert_eq!(cluster_early.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(local_early.load(std::sync::atomic::Ordering::Relaxed), 0);
    // The report's enrich figures come from the executors' tasks.
    let e = &remote["enrich"][0];
    assert_eq!(e["calls"], calls.values().sum::<u64>(), "{e}");
    assert_eq!(e["distinct_keys"], keys.len() as u64, "{e}");
    assert_eq!(e["rows"], 8000, "{e}");
    let sql = "SELECT record_id, title, count(*) AS n FROM t GROUP BY record_id, title ORDER BY record_id";
    assert_eq!(
        wd.query(sql, &[("t", "out-cluster")]),
        wd.query(sql, &[("t", "out-local")])
    );
    assert_eq!(
        output_rejects(&wd, "out-cluster"),
        output_rejects(&wd, "out-local")
    );
}

/// `sluice explain --cluster` shows the stages Ballista would cut the job into, without
/// contacting the cluster: an enrich stage runs in a stage of its own, fed by a shuffle
/// that partitions the rows by its key, in as many tasks as the job has threads.
#[test]
fn explain_shows_the_stages_and_tasks_on_a_cluster() {
    let wd = Workdir::new();
    for f in 0..3 {
        wd.write(
            &format!("in/p{f}.csv"),
            format!("record_id,n\nk{f},1\nk9,2\n"),
        );
    }
    wd.write(
        "p.toml",
        "[source]\npaths = \"in\"\n[[enrich]]\nname = \"meta\"\n\
         url = \"http://127.0.0.1:9/meta/{record_id}\"\nconcurrency = 8\n\
         [enrich.extract]\ntitle = \"/title\"\n[sink]\npath = \"out\"\n[settings]\nthreads = 3\n",
    );
    let text = wd.ok(&["explain", "p.toml", "--cluster", "df://127.0.0.1:9"]);
    assert!(text.contains("on the cluster:"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&wd.ok(&[
        "explain",
        "p.toml",
        "--cluster",
        "df://127.0.0.1:9",
        "--format",
        "json",
    ]))
    .expect("json");
    let stages = json["cluster"].as_array().expect("stages");
    let enrich = stages
        .iter()
        .find(|s| s["nodes"].to_string().contains("EnrichExec"))
        .expect("a stage runs the enrich stage");
    assert_eq!(enrich["tasks"], 3, "{enrich}");
    let feeding = enrich["reads_stages"].as_array().expect("reads");
    assert!(!feeding.is_empty(), "{enrich}");
    // The stage feeding it partitions the rows by the key, into one partition per task.
    let feeder = stages
        .iter()
        .find(|s| feeding.contains(&s["id"]))
        .expect("the feeding stage");
    let out = feeder["output"].as_str().unwrap_or_default();
    assert!(
        out.starts_with("Hash(") && out.contains("record_id") && out.ends_with(", 3)"),
        "{feeder}"
    );
    let local: serde_json::Value =
        serde_json::from_str(&wd.ok(&["explain", "p.toml", "--format", "json"])).expect("json");
    assert!(local.get("cluster").is_none(), "{local}");
    assert!(!wd.path("out").exists());
    // The write is a stage's work too: one output file is one task that concatenates the
    // partitions in order (regression: explain showed the stages without the write, a last
    // stage of 3 tasks for a job that writes one file in 1).
    let one = wd
        .read("p.toml")
        .replace("path = \"out\"", "path = \"one.csv\"");
    wd.write("one.toml", one);
    let json: serde_json::Value = serde_json::from_str(&wd.ok(&[
        "explain",
        "one.toml",
        "--cluster",
        "df://127.0.0.1:9",
        "--format",
        "json",
    ]))
    .expect("json");
    let stages = json["cluster"].as_array().expect("stages");
    let last = stages.last().expect("a last stage");
    let nodes = last["nodes"].to_string();
    assert!(
        nodes.contains("WriteExec") && nodes.contains("OrderedConcatExec"),
        "{last}"
    );
    assert_eq!(last["tasks"], 1, "{last}");
    assert!(!wd.path("one.csv").exists());
}

/// Remote inputs on a cluster: the executors open the job's `s3://` files with their own
/// credentials (their environment) and the job's options that are not secrets (endpoint,
/// region, allow_http); a secret given to the client is in no plan, setting or log of the
/// cluster, and the answer is the local run's.
#[test]
fn s3_inputs_on_the_cluster_use_the_executors_credentials() {
    let Some(moto) = sluice_testkit::moto::Moto::start(&[]) else {
        return;
    };
    let wd = Workdir::new();
    moto.bucket("bkt");
    let mut rows = 0;
    for f in 0..6 {
        let mut text = String::from("id,cat,v\n");
        for r in 0..500 {
            text.push_str(&format!("{r},c{},{}\n", r % 4, r * f));
            rows += 1;
        }
        moto.put("bkt", &format!("in/p{f}.csv"), text.as_bytes());
    }
    let secret = "SECRET-DO-NOT-SHIP-7f3a";
    let (_procs, url) = s3_cluster(
        &wd,
        &[(
            "SLUICE_LOG",
            "ballista_executor=trace,ballista_scheduler=debug,warn",
        )],
    );
    let endpoint = format!("endpoint={}", moto.endpoint());
    let ingest = |out: &str, cluster: Option<&str>| -> serde_json::Value {
        let report = format!("{out}.json");
        let mut args = vec![
            "ingest",
            "s3://bkt/in/*.csv",
            "--to",
            out,
            "--quiet",
            "--report-json",
            &report,
            "--storage-option",
            &endpoint,
            "--storage-option",
            "allow_http=true",
            "--storage-option",
            "region=us-east-1",
            "--storage-option",
            "access_key_id=testing",
        ];
        let secret_option = format!("secret_access_key={secret}");
        args.extend(["--storage-option", &secret_option]);
        if let Some(url) = cluster {
            args.extend(["--cluster", url]);
        }
        wd.ok(&args);
        serde_json::from_str(&wd.read(&report)).expect("report")
    };
    let local = ingest("out-local", None);
    let remote = ingest("out-cluster", Some(&url));
    assert_eq!(jobs_done(&url), 1, "the job ran on the cluster");
    assert_eq!(remote["rows_in"], rows, "{remote}");
    assert_eq!(counts(&remote), counts(&local), "{remote}");
    let sql = "SELECT cat, count(*) AS n, sum(v) AS s FROM t GROUP BY cat ORDER BY cat";
    assert_eq!(
        wd.query(sql, &[("t", "out-cluster")]),
        wd.query(sql, &[("t", "out-local")])
    );
    let config = secret_nowhere(&wd, &url, secret);
    assert!(config.contains("sluice.storage"), "{config}");
    assert!(config.contains("allow_http"), "{config}");
}

/// Checks that `secret` is in neither the settings of the cluster's first job as its
/// scheduler holds them (and hands to every task) nor any log of the cluster; returns those
/// settings.
fn secret_nowhere(wd: &Workdir, url: &str, secret: &str) -> String {
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let jobs: serde_json::Value =
        serde_json::from_str(&http_get(port, "/api/jobs").unwrap_or_default()).expect("jobs");
    let job = jobs[0]["job_id"].as_str().expect("a job id").to_string();
    let config = http_get(port, &format!("/api/job/{job}/config")).expect("job config");
    assert!(!config.contains(secret), "{config}");
    for log in ["scheduler.log", "executor-0.log", "executor-1.log"] {
        assert!(!wd.read(log).contains(secret), "{log} holds the secret");
    }
    config
}

/// A lookup on an object store runs on the cluster with the pipeline's `[storage]` options
/// that are not secrets and the executors' own credentials: the secret written in the
/// pipeline is in no plan (the codec drops it: `codec::tests::stage_nodes_carry_no_secret`),
/// setting or log of the cluster, and the answer is the local run's.
#[test]
fn s3_lookups_on_the_cluster_use_the_executors_credentials() {
    let Some(moto) = sluice_testkit::moto::Moto::start(&[]) else {
        return;
    };
    let wd = Workdir::new();
    moto.bucket("bkt");
    let mut rows = 0;
    for f in 0..4 {
        let mut text = String::from("id,cat\n");
        for r in 0..300 {
            text.push_str(&format!("{r},c{}\n", (r + f) % 5));
            rows += 1;
        }
        moto.put("bkt", &format!("in/p{f}.csv"), text.as_bytes());
    }
    // c4 has no label: those rows are rejected, on the executors, and counted back.
    moto.put_exact(
        "bkt",
        "lk/cats é.csv",
        "cat,label\nc0,zero\nc1,one\nc2,two\nc3,three\n",
    );
    let secret = "SECRET-LOOKUP-DO-NOT-SHIP-9b1e";
    let (_procs, url) = s3_cluster(
        &wd,
        &[(
            "SLUICE_LOG",
            "ballista_executor=trace,ballista_scheduler=debug,warn",
        )],
    );
    let pipeline = |out: &str| {
        format!(
            r#"
[source]
paths = "s3://bkt/in/"
on_error = "reject"

[[lookup]]
name = "cats"
paths = "s3://bkt/lk/cats é.csv"
on = "cat"
on_missing = "reject"

[sink]
path = "{out}"

[storage]
endpoint = "{}"
allow_http = "true"
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "{secret}"
"#,
            moto.endpoint()
        )
    };
    wd.write("local.toml", pipeline("out-local"));
    wd.write("cluster.toml", pipeline("out-cluster"));
    let local = run_report(&wd, "local.toml", &[]);
    let remote = run_report(&wd, "cluster.toml", &["--cluster", &url]);
    assert_eq!(jobs_done(&url), 1, "the job ran on the cluster");
    assert_eq!(remote["rows_in"], rows, "{remote}");
    assert_eq!(remote["rows_rejected"], rows / 5, "{remote}");
    assert_eq!(counts(&remote), counts(&local), "{remote}");
    let sql = "SELECT label, count(*) AS n FROM t GROUP BY label ORDER BY label";
    let answer = wd.query(sql, &[("t", "out-cluster")]);
    assert_eq!(answer, wd.query(sql, &[("t", "out-local")]));
    assert_eq!(answer.len(), 5, "{answer:?}");
    assert_eq!(
        output_rejects(&wd, "out-cluster").len(),
        output_rejects(&wd, "out-local").len()
    );
    secret_nowhere(&wd, &url, secret);
}

/// The enrich stage's persistent cache works from every executor when it is on a shared
/// folder: a second run of the job on the cluster makes no call at all, and its answers are
/// the first run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enrich_cache_on_a_shared_folder_serves_every_executor() {
    let wd = std::sync::Arc::new(Workdir::new());
    the_cache_serves_every_executor(wd, "cache/meta", "", &[]).await;
}

/// The same with the cache on an object store (moto on loopback): the executors open it
/// with the pipeline's `[storage]` options that are not secrets and their own credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enrich_cache_on_an_object_store_serves_every_executor() {
    let Some(moto) = sluice_testkit::moto::Moto::start(&[]) else {
        return;
    };
    moto.bucket("bkt");
    let wd = std::sync::Arc::new(Workdir::new());
    let storage = format!(
        "[storage]\nendpoint = \"{}\"\nallow_http = \"true\"\nregion = \"us-east-1\"\n\
         access_key_id = \"testing\"\nsecret_access_key = \"SECRET-CACHE-DO-NOT-SHIP\"\n",
        moto.endpoint()
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing-secret-key"),
    ];
    the_cache_serves_every_executor(
        std::sync::Arc::clone(&wd),
        "s3://bkt/shared cache/é",
        &storage,
        &env,
    )
    .await;
    assert_eq!(moto.keys("bkt", "shared cache/é/").len(), 100);
    for log in ["scheduler.log", "executor-0.log", "executor-1.log"] {
        assert!(
            !wd.read(log).contains("SECRET-CACHE"),
            "{log} holds the secret"
        );
    }
}

/// Runs a job enriching 300 rows over 100 keys twice on a cluster (started with `env`),
/// its cache at `cache` (and the pipeline ending with `storage`): the first run calls each
/// key once, the second calls nothing and writes the same answers.
async fn the_cache_serves_every_executor(
    wd: std::sync::Arc<Workdir>,
    cache: &str,
    storage: &str,
    env: &[(&str, &str)],
) {
    use sluice_testkit::{meta_api, ApiServer};
    let server = ApiServer::start(meta_api(Duration::from_millis(2))).await;
    for f in 0..3 {
        let mut text = String::from("record_id,n\n");
        for r in 0..100 {
            text.push_str(&format!("k{},{}\n", (r * 3 + f) % 100, f * 100 + r));
        }
        wd.write(&format!("in/p{f}.csv"), text);
    }
    let pipeline = |out: &str| {
        format!(
            "[source]\npaths = \"in\"\n[[enrich]]\nname = \"meta\"\nurl = \"{}\"\n\
             concurrency = 4\ncache = \"{cache}\"\n[enrich.extract]\ntitle = \"/title\"\n\
             [sink]\npath = \"{out}\"\n[settings]\nthreads = 4\n{storage}",
            server.url("/meta/{record_id}")
        )
    };
    wd.write("first.toml", pipeline("out-first"));
    wd.write("second.toml", pipeline("out-second"));
    let w = std::sync::Arc::clone(&wd);
    let counters = std::sync::Arc::clone(&server.counters);
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (first, calls_first, second, calls_second) = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (_procs, url) = cluster_env(&w, &[], &[], &env);
        let run = |file: &str| -> serde_json::Value {
            let report = format!("{file}.json");
            w.ok(&[
                "run",
                file,
                "--report-json",
                &report,
                "--quiet",
                "--cluster",
                &url,
            ]);
            serde_json::from_str(&w.read(&report)).expect("report")
        };
        let first = run("first.toml");
        let calls_first = counters.requests.load(std::sync::atomic::Ordering::SeqCst);
        let second = run("second.toml");
        let calls_second =
            counters.requests.load(std::sync::atomic::Ordering::SeqCst) - calls_first;
        (first, calls_first, second, calls_second)
    })
    .await
    .expect("runs");
    assert_eq!(calls_first, 100, "one call per key: {first}");
    assert_eq!(first["enrich"][0]["calls"], 100, "{first}");
    assert_eq!(
        calls_second, 0,
        "the second run is served by the cache: {second}"
    );
    assert_eq!(second["enrich"][0]["cache_hits"], 100, "{second}");
    assert_eq!(second["rows_out"], 300);
    let sql = "SELECT record_id, title, count(*) AS n FROM t GROUP BY record_id, title ORDER BY record_id";
    assert_eq!(
        wd.query(sql, &[("t", "out-second")]),
        wd.query(sql, &[("t", "out-first")])
    );
}

/// A lookup is loaded once per executor for a job, not once per task: the tasks of one job
/// in one executor share its table (each counting its own matches). The lookup is served
/// over HTTP so that the server counts its reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_is_loaded_once_per_executor_not_once_per_task() {
    use sluice_testkit::ApiServer;
    let wd = std::sync::Arc::new(Workdir::new());
    wd.write("files/cats.csv", "cat,label\nc0,Zero\nc1,One\nc2,Two\n");
    let server = ApiServer::start(crate::s3::static_server(wd.path("files"))).await;
    for f in 0..8 {
        let mut text = String::from("id,cat\n");
        for r in 0..200 {
            text.push_str(&format!("{r},c{}\n", (r + f) % 4));
        }
        wd.write(&format!("in/p{f}.csv"), text);
    }
    let pipeline = |out: &str| {
        format!(
            "[source]\npaths = \"in\"\n[[lookup]]\nname = \"cats\"\npaths = \"{}\"\non = \"cat\"\n\
             [sink]\npath = \"{out}\"\n[settings]\nthreads = 8\n",
            server.url("/cats.csv")
        )
    };
    wd.write("local.toml", pipeline("out-local"));
    wd.write("cluster.toml", pipeline("out-cluster"));
    let w = std::sync::Arc::clone(&wd);
    let counters = std::sync::Arc::clone(&server.counters);
    let (local, remote, reads_local, reads_cluster, tasks) =
        tokio::task::spawn_blocking(move || {
            let requests = || counters.requests.load(std::sync::atomic::Ordering::SeqCst);
            let run = |file: &str, extra: &[&str]| run_report(&w, file, extra);
            let local = run("local.toml", &[]);
            let reads_local = requests();
            let (_procs, url) = cluster(&w);
            // The tasks of the stage that runs the lookup, as Ballista's planner cuts it.
            let plan: serde_json::Value = serde_json::from_str(&w.ok(&[
                "explain",
                "cluster.toml",
                "--cluster",
                &url,
                "--format",
                "json",
            ]))
            .expect("json");
            let tasks = plan["cluster"]
                .as_array()
                .expect("stages")
                .iter()
                .find(|s| s["nodes"].to_string().contains("LookupExec"))
                .and_then(|s| s["tasks"].as_u64())
                .expect("the lookup's stage");
            let before = requests();
            let remote = run("cluster.toml", &["--cluster", &url]);
            (local, remote, reads_local, requests() - before, tasks)
        })
        .await
        .expect("runs");
    assert_eq!(counts(&remote), counts(&local), "{remote}");
    assert_eq!(
        remote["lookups"][0]["matched"],
        local["lookups"][0]["matched"]
    );
    assert!(tasks >= 4, "the lookup runs in {tasks} tasks");
    // The client loads it as locally; each of the two executors once more.
    assert!(
        reads_cluster <= 3 * reads_local,
        "{reads_cluster} requests for the lookup on the cluster, {reads_local} locally, \
         {tasks} tasks"
    );
}

/// ORC inputs on the cluster: `datafusion-orc`'s scan has no serialized form, so each ORC
/// part travels as what its scan is made from and is made again on the executor; the
/// answer and the report are the local run's.
#[test]
fn orc_inputs_run_on_the_cluster() {
    let wd = Workdir::new();
    let Some(_) = crate::workdir::orc_pair(&wd, "orc/a.orc", "orc/b b.orc") else {
        return;
    };
    let (_procs, url) = cluster(&wd);
    // `sql` over table `t` = `folder`, here or on the cluster.
    let query = |sql: &str, folder: &str, cluster: Option<&str>| {
        let table = format!("t={folder}");
        let mut args = vec!["query", sql, "-t", &table, "--output", "csv"];
        if let Some(url) = cluster {
            args.extend(["--cluster", url]);
        }
        wd.ok(&args)
    };
    let sums = "SELECT count(*) AS n, sum(v) AS s, sum(id) AS i FROM t";
    assert_eq!(query(sums, "orc", Some(&url)), query(sums, "orc", None));
    assert_eq!(
        query(sums, "orc", Some(&url)),
        "n,s,i\n1500,250250.0,624250\n"
    );
    wd.ok(&[
        "ingest",
        "orc",
        "--to",
        "out-local",
        "--quiet",
        "--report-json",
        "l.json",
    ]);
    wd.ok(&[
        "ingest",
        "orc",
        "--to",
        "out-cluster",
        "--quiet",
        "--report-json",
        "c.json",
        "--cluster",
        &url,
    ]);
    let report =
        |f: &str| -> serde_json::Value { serde_json::from_str(&wd.read(f)).expect("report") };
    assert_eq!(counts(&report("c.json")), counts(&report("l.json")));
    assert_eq!(report("c.json")["rows_out"], 1500);
    assert_eq!(
        jobs_done(&url),
        3,
        "the query twice and the ingest ran on the cluster"
    );
    // Under Hive partition folders: each part's partition values travel with it.
    let Some(_) = crate::workdir::orc_pair(&wd, "hive/p=x/a.orc", "hive/p=y/b.orc") else {
        return;
    };
    let by_p = |cluster: Option<&str>| {
        let sql = "SELECT p, count(*) AS n, sum(v) AS s FROM t GROUP BY p ORDER BY p";
        let mut args = vec!["query", sql, "-t", "t=hive", "--output", "csv"];
        if let Some(url) = cluster {
            args.extend(["--cluster", url]);
        }
        wd.ok(&args)
    };
    assert_eq!(by_p(Some(&url)), by_p(None));
    assert_eq!(by_p(Some(&url)), "p,n,s\nx,1000,249750.0\ny,500,500.0\n");
}
