//! The same object-storage scenarios on all three clouds' emulators: moto (`s3://`), Azurite
//! (`az://`) and fake-gcs-server (`gs://`), each started by the test on 127.0.0.1, objects
//! put and listed around sluice by each cloud's own client (see `sluice_testkit::stores`).
//!
//! GCS writes are not run: fake-gcs-server has no XML upload API (the requests object_store
//! sends to write; fsouza/fake-gcs-server#1164 is still open), so only reads run on `gs://`.

use std::process::Command;

use sluice_testkit::stores::{Cloud, Store};

use crate::workdir::Workdir;

fn run(store: &Store, wd: &Workdir, args: &[&str]) -> std::process::Output {
    let mut cmd: Command = wd.sluice();
    cmd.args(args).args(store.args());
    cmd.output().expect("run sluice")
}

fn ok(store: &Store, wd: &Workdir, args: &[&str]) -> String {
    let out = run(store, wd, args);
    assert!(
        out.status.success(),
        "{:?} {args:?} failed: {}\n{}",
        store.cloud(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count(store: &Store, wd: &Workdir, input: &str) -> String {
    ok(
        store,
        wd,
        &[
            "query",
            "SELECT count(*) AS n, sum(v) AS s FROM t",
            "--table",
            &format!("t={input}"),
            "--output",
            "csv",
        ],
    )
}

/// Folder names from the corpus of odd paths: every one must be read as written.
const ODD: [&str; 9] = [
    "héllo",
    "pct%41",
    "h#sh",
    "ti~de",
    "sp ace",
    "日本語",
    "😀",
    "a[1]",
    "q?x",
];

/// Folders, globs, named objects and Hive folders read the same on every cloud, odd keys
/// included; hidden objects are skipped; a missing object is one clear line.
fn reads(cloud: Cloud) {
    let Some(store) = Store::start(cloud) else {
        return;
    };
    let wd = Workdir::new();
    store.bucket("bkt");
    // Object i holds i+1 rows with v = 1..=i+1: the totals are known without sluice.
    let (mut rows, mut sum) = (0usize, 0usize);
    for (i, name) in ODD.iter().enumerate() {
        let mut body = String::from("v,name\n");
        for v in 1..=i + 1 {
            body.push_str(&format!("{v},\"{name}, {v}\"\n"));
            rows += 1;
            sum += v;
        }
        store.put("bkt", &format!("odd/{name}/{name}.csv"), body);
    }
    store.put("bkt", "odd/_hidden.csv", "v\n1000\n");
    store.put("bkt", "odd/.dot.csv", "v\n1000\n");
    let want = format!("n,s\n{rows},{sum}\n");
    assert_eq!(count(&store, &wd, &store.url("bkt", "odd/")), want);
    assert_eq!(count(&store, &wd, &store.url("bkt", "odd")), want);
    assert_eq!(count(&store, &wd, &store.url("bkt", "odd/*/*.csv")), want);
    for (i, name) in ODD.iter().enumerate() {
        let n = i + 1;
        assert_eq!(
            count(
                &store,
                &wd,
                &store.url("bkt", &format!("odd/{name}/{name}.csv"))
            ),
            format!("n,s\n{n},{}\n", n * (n + 1) / 2),
            "{cloud:?} {name}"
        );
    }
    // Hive folders become a column; NDJSON and CSV meet by column name.
    store.put("bkt", "hive/country=DE/a.csv", "v\n1\n2\n");
    store.put("bkt", "hive/country=FR/b.ndjson", "{\"v\":3}\n");
    let got = ok(
        &store,
        &wd,
        &[
            "query",
            "SELECT country, sum(v) AS s FROM t GROUP BY country ORDER BY country",
            "--table",
            &format!("t={}", store.url("bkt", "hive/")),
            "--output",
            "csv",
        ],
    );
    assert_eq!(got, "country,s\nDE,3\nFR,3\n", "{cloud:?}");
    // A missing object: exit 1, one line naming it.
    let missing = store.url("bkt", "odd/nope.csv");
    let out = run(
        &store,
        &wd,
        &["query", "SELECT 1", "--table", &format!("t={missing}")],
    );
    assert_eq!(out.status.code(), Some(1), "{cloud:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&missing) && err.contains("not found") && err.trim().lines().count() == 1,
        "{cloud:?}: {err}"
    );
}

/// Writes commit with the manifest, rejects beside the output, partition folders under the
/// keys readers look for; append keeps both jobs' files and rejects; overwrite removes them.
fn writes(cloud: Cloud) {
    let Some(store) = Store::start(cloud) else {
        return;
    };
    let wd = Workdir::new();
    store.bucket("out");
    let values = ["a/b", "héllo", "%", "%41", "#x", "~", "a b", "😀"];
    let mut csv = String::from("p,v\n");
    for (i, v) in values.iter().enumerate() {
        csv.push_str(&format!("\"{v}\",{i}\n"));
    }
    csv.push_str("bad,not-a-number\n");
    wd.write("in.csv", &csv);
    let target = store.url("out", "t/");
    let ingest = |mode: &str| {
        ok(
            &store,
            &wd,
            &[
                "ingest",
                "in.csv",
                "--to",
                &target,
                "--partition-by",
                "p",
                "--schema",
                "v BIGINT",
                "--mode",
                mode,
                "--quiet",
            ],
        )
    };
    let read_back = || {
        ok(
            &store,
            &wd,
            &[
                "query",
                "SELECT p, v FROM t ORDER BY v, p",
                "--table",
                &format!("t={target}"),
                "--output",
                "csv",
            ],
        )
    };
    let expected = |copies: usize| -> String {
        let mut s = String::from("p,v\n");
        for (i, v) in values.iter().enumerate() {
            for _ in 0..copies {
                s.push_str(&format!("{v},{i}\n"));
            }
        }
        s
    };
    ingest("error");
    let keys = store.keys("out", "t/");
    assert!(
        keys.contains(&"t/_SUCCESS".to_string()),
        "{cloud:?} {keys:?}"
    );
    for folder in [
        "t/p=a%2Fb/",
        "t/p=héllo/",
        "t/p=%25/",
        "t/p=%2541/",
        "t/p=😀/",
    ] {
        assert!(
            keys.iter().any(|k| k.starts_with(folder)),
            "{cloud:?} {folder}: {keys:?}"
        );
    }
    let rejects: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("t/_rejects/"))
        .collect();
    assert_eq!(rejects.len(), 1, "{cloud:?} {keys:?}");
    let text = String::from_utf8(store.get("out", rejects[0])).expect("utf-8");
    assert!(text.contains("not-a-number"), "{cloud:?}: {text}");
    assert_eq!(read_back(), expected(1), "{cloud:?}");
    // The manifest lists exactly the data files that exist.
    let manifest = String::from_utf8(store.get("out", "t/_SUCCESS")).expect("utf-8");
    let data: Vec<&String> = keys.iter().filter(|k| k.ends_with(".parquet")).collect();
    assert_eq!(data.len(), values.len(), "{cloud:?} {keys:?}");
    for k in &data {
        let rel = k.strip_prefix("t/").expect("below t/");
        assert!(manifest.contains(rel), "{cloud:?}: {rel} not in {manifest}");
    }

    // A second job appends: twice the rows, both jobs' rejects kept.
    ingest("append");
    assert_eq!(read_back(), expected(2), "{cloud:?}");
    let keys = store.keys("out", "t/");
    let rejects = keys.iter().filter(|k| k.starts_with("t/_rejects/")).count();
    assert_eq!(rejects, 2, "{cloud:?} {keys:?}");

    // Overwrite leaves only the new job's files.
    ingest("overwrite");
    assert_eq!(read_back(), expected(1), "{cloud:?}");
    let keys = store.keys("out", "t/");
    let data = keys.iter().filter(|k| k.ends_with(".parquet")).count();
    assert_eq!(data, values.len(), "{cloud:?} {keys:?}");

    // Mode `error` refuses the existing output with one line.
    let out = run(
        &store,
        &wd,
        &["ingest", "in.csv", "--to", &target, "--quiet"],
    );
    assert_eq!(out.status.code(), Some(1), "{cloud:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exists"), "{cloud:?}: {err}");
}

#[test]
fn s3_reads() {
    reads(Cloud::S3);
}

#[test]
fn gcs_reads() {
    reads(Cloud::Gcs);
}

#[test]
fn azure_reads() {
    reads(Cloud::Azure);
}

#[test]
fn s3_writes() {
    writes(Cloud::S3);
}

#[test]
fn azure_writes() {
    writes(Cloud::Azure);
}
