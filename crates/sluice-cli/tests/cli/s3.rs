//! Object storage: a real S3-compatible server (moto in server mode) on 127.0.0.1, started by
//! each test, and an HTTP file server, driving the real binary.
//!
//! `.ci/run` installs moto and sets `SLUICE_REQUIRE_S3=1`, so there the tests cannot skip;
//! elsewhere they skip (with a note) when `moto_server` is not installed.

use std::process::Command;
use std::time::Duration;

use sluice_testkit::moto::Moto;

use crate::workdir::Workdir;

/// The sluice command with credentials and the endpoint in the environment only.
trait MotoSluice {
    fn sluice(&self, wd: &Workdir) -> Command;
}

impl MotoSluice for Moto {
    fn sluice(&self, wd: &Workdir) -> Command {
        let mut cmd = wd.sluice();
        cmd.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_ALLOW_HTTP", "true");
        cmd
    }
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The same files on disk and in the bucket under `data/`.
fn upload_data(moto: &Moto, wd: &Workdir) {
    let mut big = String::from("id,name,amount\n");
    for i in 0..40_000 {
        big.push_str(&format!("{i},\"name, {i}\",{}.25\n", i % 97));
    }
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("data/a.csv", b"id,name,amount\n1,x,1.5\n2,y,2.5\n".to_vec()),
        ("data/sub/b.csv", b"id,amount,extra\n3,3.5,e\n".to_vec()),
        ("data/big.csv", big.into_bytes()),
        (
            "data/late.ndjson",
            b"{\"id\":4,\"name\":\"z\",\"amount\":4.5}\n".to_vec(),
        ),
        ("data/_hidden.csv", b"id\n999\n".to_vec()),
        ("data/country=DE/c.csv", b"id,amount\n5,5.5\n".to_vec()),
    ];
    moto.bucket("bkt");
    for (key, body) in &files {
        moto.put("bkt", key, body);
        wd.write(key, body);
    }
}

#[test]
fn s3_inputs_read_like_local_files() {
    let Some(moto) = Moto::start(&[]) else { return };
    let wd = Workdir::new();
    upload_data(&moto, &wd);
    let summary =
        "SELECT count(*) AS n, sum(amount) AS total, count(DISTINCT name) AS names FROM t";
    // A folder (recursive, hidden skipped, Hive folders read back), split in byte ranges.
    ok(moto.sluice(&wd).args([
        "ingest",
        "s3://bkt/data/",
        "--to",
        "from-s3",
        "--split-min-size",
        "65536",
        "--threads",
        "4",
        "--report-json",
        "r.json",
        "--quiet",
    ]));
    ok(wd
        .sluice()
        .args(["ingest", "data/", "--to", "from-disk", "--quiet"]));
    let remote = wd.query(summary, &[("t", "from-s3")]);
    let local = wd.query(summary, &[("t", "from-disk")]);
    assert_eq!(remote, local);
    assert_eq!(remote[1].split(',').next(), Some("40005"));
    let report: serde_json::Value = serde_json::from_str(&wd.read("r.json")).expect("json");
    assert_eq!(report["files_read"], 5, "{report}");
    assert!(
        report["input_partitions"].as_u64().unwrap_or(0) >= 4,
        "{report}"
    );
    assert!(report["bytes_read"].as_u64().unwrap_or(0) > 1_000_000);
    // A glob, and one object.
    ok(moto
        .sluice(&wd)
        .args(["ingest", "s3://bkt/data/*.csv", "--to", "glob", "--quiet"]));
    assert_eq!(
        wd.query("SELECT count(*) AS n FROM t", &[("t", "glob")]),
        ["n", "40002"]
    );
    let schema = ok(moto.sluice(&wd).args(["schema", "s3://bkt/data/sub/b.csv"]));
    assert!(schema.contains("extra"), "{schema}");
    // Storage options on the command line instead of the environment.
    let mut cmd = wd.sluice();
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
        .args([
            "ingest",
            "s3://bkt/data/a.csv",
            "--to",
            "opts",
            "--quiet",
            "--storage-option",
            &format!("endpoint={}", moto.endpoint()),
            "--storage-option",
            "allow_http=true",
            "--storage-option",
            "region=us-east-1",
        ]);
    ok(&mut cmd);
    assert_eq!(
        wd.query("SELECT count(*) AS n FROM t", &[("t", "opts")]),
        ["n", "2"]
    );
}

#[test]
fn s3_errors_are_clear() {
    let Some(moto) = Moto::start(&[]) else { return };
    let wd = Workdir::new();
    moto.bucket("bkt");
    moto.put("bkt", "a.csv", "id\n1\n");
    let err = fails(
        moto.sluice(&wd)
            .args(["ingest", "s3://nobucket/x/", "--to", "o"]),
    );
    assert!(err.contains("s3://nobucket/x/"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = fails(
        moto.sluice(&wd)
            .args(["ingest", "s3://bkt/missing.csv", "--to", "o"]),
    );
    assert!(err.contains("s3://bkt/missing.csv"), "{err}");
    let err = fails(
        moto.sluice(&wd)
            .args(["ingest", "s3://bkt/*.parquet", "--to", "o"]),
    );
    assert!(
        err.contains("no input files match 's3://bkt/*.parquet'"),
        "{err}"
    );
    // Nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let mut cmd = moto.sluice(&wd);
    cmd.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
    let err = fails(cmd.args(["ingest", "s3://bkt/a.csv", "--to", "o"]));
    assert!(err.contains("cannot reach the storage endpoint"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!wd.path("o").exists());
    // The secret key is never printed.
    assert!(!err.contains("testing-secret-key"));
}

#[test]
fn s3_access_denied_is_clear() {
    // moto checks credentials when told to.
    let Some(moto) = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]) else {
        return;
    };
    let wd = Workdir::new();
    let err = fails(
        moto.sluice(&wd)
            .args(["ingest", "s3://bkt/a.csv", "--to", "o"]),
    );
    assert!(err.contains("access denied"), "{err}");
    assert!(!err.contains("testing-secret-key"));
}

/// Serves files of `wd` over HTTP with HEAD and Range support, like a static file server.
pub(crate) fn static_server(
    root: std::path::PathBuf,
) -> impl Fn(&sluice_testkit::Request) -> sluice_testkit::Reply {
    use sluice_testkit::Reply;
    move |req| {
        let rel = req.path.trim_start_matches('/');
        let Ok(data) = std::fs::read(root.join(rel)) else {
            return Reply::status(404);
        };
        let (status, body, range) = match req.headers.get("range") {
            Some(r) => {
                let spec = r.trim_start_matches("bytes=");
                let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
                let start: usize = a.parse().unwrap_or(0);
                let end: usize = b
                    .parse::<usize>()
                    .map(|e| e + 1)
                    .unwrap_or(data.len())
                    .min(data.len());
                (
                    206,
                    data[start.min(end)..end].to_vec(),
                    Some(format!(
                        "bytes {start}-{}/{}",
                        end.saturating_sub(1),
                        data.len()
                    )),
                )
            }
            None => (200, data.clone(), None),
        };
        let mut reply = Reply::Respond {
            status,
            headers: vec![
                (
                    "last-modified".into(),
                    "Mon, 30 Nov 2026 00:00:00 GMT".into(),
                ),
                ("etag".into(), format!("\"{}\"", data.len())),
                ("accept-ranges".into(), "bytes".into()),
            ],
            body,
            delay: Duration::ZERO,
        };
        if let Some(r) = range {
            reply = reply.header("content-range", &r);
        }
        reply
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_style_single_files_are_read() {
    let wd = std::sync::Arc::new(Workdir::new());
    wd.write("files/a.csv", "id,name\n1,x\n2,y\n");
    let server = sluice_testkit::ApiServer::start(static_server(wd.root().to_path_buf())).await;
    let url = server.url("/files/a.csv");
    let w = std::sync::Arc::clone(&wd);
    let out = tokio::task::spawn_blocking(move || {
        w.sluice()
            .args(["ingest", &url, "--to", "out", "--quiet"])
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        wd.query(
            "SELECT count(*) AS n, max(name) AS m FROM t",
            &[("t", "out")]
        ),
        ["n,m", "2,y"]
    );
    let missing = server.url("/files/nope.csv");
    let w = std::sync::Arc::clone(&wd);
    let out = tokio::task::spawn_blocking(move || {
        w.sluice()
            .args(["ingest", &missing, "--to", "o2"])
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.csv"), "{err}");
}

#[test]
fn outputs_on_s3_commit_with_the_manifest_last() {
    let Some(moto) = Moto::start(&[]) else { return };
    let wd = Workdir::new();
    upload_data(&moto, &wd);
    moto.bucket("out");
    let count = "SELECT count(*) AS n, sum(amount) AS total FROM t";
    let local = {
        ok(wd
            .sluice()
            .args(["ingest", "data/", "--to", "local", "--quiet"]));
        wd.query(count, &[("t", "local")])
    };
    // local -> s3, partitioned, two files per folder.
    wd.write(
        "p.csv",
        "id,country,amount\n1,DE,1.5\n2,FR,2.5\n3,DE,3.5\n4,,4.5\n",
    );
    ok(moto.sluice(&wd).args([
        "ingest",
        "p.csv",
        "--to",
        "s3://out/parts",
        "--partition-by",
        "country",
        "--quiet",
    ]));
    let keys = moto.list("out", "parts/");
    assert!(keys.contains(&"parts/_SUCCESS".to_string()), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("parts/country=DE/part-")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with("parts/country=__HIVE_DEFAULT_PARTITION__/")),
        "{keys:?}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&moto.get("out", "parts/_SUCCESS")).expect("manifest");
    assert_eq!(manifest["rows"], 4);
    assert_eq!(
        manifest["files"].as_array().map(Vec::len),
        Some(keys.len() - 1),
        "the manifest lists every data file: {keys:?}"
    );
    ok(moto
        .sluice(&wd)
        .args(["ingest", "s3://out/parts/", "--to", "back", "--quiet"]));
    assert_eq!(
        wd.query(
            "SELECT count(*) AS n, sum(amount) AS s, count(country) AS c FROM t",
            &[("t", "back")]
        ),
        ["n,s,c", "4,12.0,3"]
    );

    // s3 -> s3, big data, compared with the local run; then overwrite and append.
    let to_s3 = |mode: &str| {
        ok(moto.sluice(&wd).args([
            "ingest",
            "s3://bkt/data/",
            "--to",
            "s3://out/all",
            "--files",
            "2",
            "--mode",
            mode,
            "--split-min-size",
            "65536",
            "--quiet",
        ]))
    };
    to_s3("error");
    ok(moto
        .sluice(&wd)
        .args(["ingest", "s3://out/all/", "--to", "all-back", "--quiet"]));
    assert_eq!(wd.query(count, &[("t", "all-back")]), local);
    let first = moto.list("out", "all/");
    assert_eq!(first.len(), 3, "two files and the manifest: {first:?}");
    // error mode refuses an existing output.
    let err =
        fails(
            moto.sluice(&wd)
                .args(["ingest", "s3://bkt/data/a.csv", "--to", "s3://out/all"]),
        );
    assert!(err.contains("already exists"), "{err}");
    // A stray file (a crashed job's upload) is not part of the output.
    moto.put(
        "out",
        "all/part-99999-crashed.csv",
        "id,amount\n1,1000000\n",
    );
    let stray_put = std::time::Instant::now();
    ok(moto
        .sluice(&wd)
        .args(["ingest", "s3://out/all/", "--to", "all-back2", "--quiet"]));
    assert_eq!(wd.query(count, &[("t", "all-back2")]), local);
    // overwrite: new files, manifest, old files (and the stray one) gone. Store timestamps
    // have one-second precision and an overwrite keeps unlisted objects not older than its
    // own uploads (they may be a concurrent job's): the stray must be a second older.
    if let Some(wait) = std::time::Duration::from_millis(1100).checked_sub(stray_put.elapsed()) {
        std::thread::sleep(wait);
    }
    to_s3("overwrite");
    let second = moto.list("out", "all/");
    assert_eq!(second.len(), 3, "{second:?}");
    assert!(first
        .iter()
        .filter(|k| !k.ends_with("_SUCCESS"))
        .all(|k| !second.contains(k)));
    // append: the old files stay and the manifest lists both sets.
    to_s3("append");
    assert_eq!(moto.list("out", "all/").len(), 5);
    ok(moto
        .sluice(&wd)
        .args(["ingest", "s3://out/all/", "--to", "twice", "--quiet"]));
    let twice = wd.query("SELECT count(*) AS n FROM t", &[("t", "twice")]);
    assert_eq!(twice, ["n", "80010"]);
    // A file bigger than one part goes up in a multipart upload, whole.
    let mut big = String::from("id,text\n");
    let mut i = 0u64;
    while big.len() < 12 << 20 {
        big.push_str(&format!(
            "{i},row number {i} with some padding to make it longer\n"
        ));
        i += 1;
    }
    wd.write("big.csv", &big);
    ok(moto.sluice(&wd).args([
        "ingest",
        "big.csv",
        "--to",
        "s3://out/big.ndjson",
        "--quiet",
    ]));
    ok(moto.sluice(&wd).args([
        "ingest",
        "s3://out/big.ndjson",
        "--to",
        "big-back",
        "--quiet",
    ]));
    assert_eq!(
        wd.query(
            "SELECT count(*) AS n, max(id) AS m FROM t",
            &[("t", "big-back")]
        ),
        ["n,m".to_string(), format!("{i},{}", i - 1)]
    );
    // A single object, and rejects beside it.
    wd.write("bad.csv", "id,amount\n1,1.5\n2,abc\n");
    ok(moto.sluice(&wd).args([
        "ingest",
        "bad.csv",
        "--to",
        "s3://out/one.csv",
        "--schema",
        "id BIGINT, amount DOUBLE",
        "--quiet",
    ]));
    assert_eq!(moto.get("out", "one.csv"), "id,amount\n1,1.5\n");
    let rejects = moto.get("out", "one.csv_rejects/rejects.ndjson");
    assert!(rejects.contains("type_mismatch"), "{rejects}");
}

#[test]
fn a_pipeline_with_a_storage_table_reads_inputs_and_lookups_from_s3() {
    let Some(moto) = Moto::start(&[]) else { return };
    let wd = Workdir::new();
    moto.bucket("bkt");
    moto.put("bkt", "in/a.csv", "id,cat\n1,x\n2,y\n3,x\n");
    moto.put("bkt", "lk/cats.csv", "cat,label\nx,Ex\ny,Why\n");
    // Credentials from the environment, the rest from [storage]; the file sits in a folder,
    // and URLs are not anchored to it.
    wd.write(
        "jobs/p.toml",
        format!(
            r#"
[source]
paths = "s3://bkt/in/"

[[lookup]]
name = "cats"
paths = "s3://bkt/lk/cats.csv"
on = "cat"

[sink]
path = "s3://bkt/out"

[storage]
endpoint = "{}"
allow_http = "true"
region = "us-east-1"
"#,
            moto.endpoint()
        ),
    );
    let mut cmd = wd.sluice();
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
        .args(["run", "jobs/p.toml", "--quiet"]);
    ok(&mut cmd);
    ok(moto
        .sluice(&wd)
        .args(["ingest", "s3://bkt/out/", "--to", "back", "--quiet"]));
    assert_eq!(
        wd.query("SELECT id, label FROM t ORDER BY id", &[("t", "back")]),
        ["id,label", "1,Ex", "2,Why", "3,Ex"]
    );
}

/// regression: keys holding `%`, `#`, `~`, spaces or non-ASCII letters were encoded a second
/// time (`héllo` became `h%C3%A9llo`), so named objects were "not found" and sluice's own
/// partition folders were written under other keys than they are read from.
#[test]
fn odd_keys_are_read_and_written_as_they_are() {
    let Some(moto) = Moto::start(&[]) else { return };
    let wd = Workdir::new();
    moto.bucket("bkt");
    let names = ["héllo", "pct%41", "h#sh", "ti~de", "sp ace", "日本語", "😀"];
    for (i, name) in names.iter().enumerate() {
        let body: String = std::iter::once("id,v\n".to_string())
            .chain((0..=i).map(|j| format!("{j},{name}\n")))
            .collect();
        moto.put_exact("bkt", &format!("odd/{name}/{name}.csv"), &body);
    }
    let total: usize = (1..=names.len()).sum();
    let count = |input: &str| -> String {
        ok(moto.sluice(&wd).args([
            "query",
            "SELECT count(*) AS n FROM t",
            "--table",
            &format!("t={input}"),
            "--output",
            "csv",
        ]))
    };
    assert_eq!(count("s3://bkt/odd/"), format!("n\n{total}\n"));
    assert_eq!(count("s3://bkt/odd/*/*.csv"), format!("n\n{total}\n"));
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            count(&format!("s3://bkt/odd/{name}/{name}.csv")),
            format!("n\n{}\n", i + 1),
            "{name}"
        );
    }
    // Partition folders written to S3 read back as the values written.
    let values = ["a/b", "héllo", "%", "%41", "#x", "~", "a b"];
    let mut csv = String::from("p,v\n");
    for (i, v) in values.iter().enumerate() {
        csv.push_str(&format!("{v},{i}\n"));
    }
    wd.write("parts.csv", &csv);
    ok(moto.sluice(&wd).args([
        "ingest",
        "parts.csv",
        "--to",
        "s3://bkt/parts/",
        "--partition-by",
        "p",
        "--quiet",
    ]));
    let keys = moto.keys("bkt", "parts/");
    assert!(
        keys.iter().any(|k| k.starts_with("parts/p=a%2Fb/")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("parts/p=héllo/")),
        "{keys:?}"
    );
    let got = ok(moto.sluice(&wd).args([
        "query",
        "SELECT p, v FROM t ORDER BY v",
        "--table",
        "t=s3://bkt/parts/",
        "--output",
        "csv",
    ]));
    let want: String = std::iter::once("p,v\n".to_string())
        .chain(values.iter().enumerate().map(|(i, v)| format!("{v},{i}\n")))
        .collect();
    assert_eq!(got, want);
}

/// regression: a second append to an S3 output replaced the earlier job's rejects.
#[test]
fn s3_append_keeps_earlier_rejects() {
    let Some(moto) = Moto::start(&[]) else { return };
    let wd = Workdir::new();
    moto.bucket("bkt");
    wd.write("a.csv", "a,b\n1,x\nzz,y\n");
    wd.write("b.csv", "a,b\n2,x\nqq,y\n");
    for input in ["a.csv", "b.csv"] {
        ok(moto.sluice(&wd).args([
            "ingest",
            input,
            "--to",
            "s3://bkt/ap/",
            "--schema",
            "a BIGINT",
            "--mode",
            "append",
            "--quiet",
        ]));
    }
    let rejects: Vec<String> = moto
        .keys("bkt", "ap/_rejects/")
        .iter()
        .map(|k| moto.get("bkt", k))
        .collect();
    let text = rejects.concat();
    assert!(text.contains("zz,y") && text.contains("qq,y"), "{text}");
    let got = ok(moto.sluice(&wd).args([
        "query",
        "SELECT count(*) AS n FROM t",
        "--table",
        "t=s3://bkt/ap/",
        "--output",
        "csv",
    ]));
    assert_eq!(got, "n\n2\n");
}

// regression: the schema of a remote CSV is guessed from its first 256 KiB, and the record
// cut off at that point took part: a date cut to `2024` made the column text.
#[test]
fn a_remote_sample_does_not_guess_from_its_cut_off_record() {
    let Some(moto) = Moto::start(&[]) else { return };
    let wd = Workdir::new();
    moto.bucket("bkt");
    // Rows of 300 bytes (fewer than the 1,000 sampled rows fit in 256 KiB, so the sample
    // ends where the fetch ended); the first row is padded so that byte 262,144 falls 4
    // bytes into a date.
    let header = "id,day,pad\n";
    let shift = (262_144 - header.len() - 13) % 300;
    let mut csv = String::from(header);
    for i in 0..2_000 {
        let pad = "x".repeat(279 + if i == 0 { shift } else { 0 });
        csv.push_str(&format!("{i:08},2024-01-15,{pad}\n"));
    }
    assert_eq!(
        &csv[262_140..262_144],
        "2024",
        "the cut falls inside a date"
    );
    moto.put("bkt", "d/x.csv", csv.as_bytes());
    let out = ok(moto.sluice(&wd).args(["schema", "s3://bkt/d/x.csv"]));
    let day = out.lines().find(|l| l.contains("day")).unwrap_or_default();
    assert!(day.contains("DATE"), "{out}");
}
