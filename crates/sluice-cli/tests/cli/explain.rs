//! `sluice explain`: snapshot tests on fixed inputs (insta), JSON output and warnings.

use crate::workdir::Workdir;

/// Copies the quickstart example (data, lookup, pipeline) into a temp folder.
fn quickstart() -> Workdir {
    let wd = Workdir::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    for rel in [
        "pipeline.toml",
        "data/2024-01/orders.csv",
        "data/2024-02/orders.csv",
        "data/2024-03/orders.csv.gz",
        "data/late/orders.ndjson",
        "lookups/categories.csv",
    ] {
        wd.write(rel, std::fs::read(root.join(rel)).expect("read example"));
    }
    wd
}

#[test]
fn explain_the_quickstart() {
    let wd = quickstart();
    let text = wd.ok(&["explain", "pipeline.toml", "--threads", "2"]);
    insta::assert_snapshot!("quickstart", text);
    assert!(!wd.path("out").exists(), "explain writes nothing");
}

#[test]
fn explain_as_json() {
    let wd = quickstart();
    let json = wd.ok(&[
        "explain",
        "pipeline.toml",
        "--threads",
        "2",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["inputs"]["files"], 4);
    assert_eq!(v["inputs"]["threads"], 2);
    assert_eq!(v["stages"][0]["kind"], "lookup");
    assert_eq!(v["stages"][1]["kind"], "sql");
    assert_eq!(v["output"]["partition_by"][0], "country");
    insta::assert_json_snapshot!("quickstart_json", v);
}

#[test]
fn explain_splits_enrich_and_warnings() {
    let wd = Workdir::new();
    // A big CSV that is split, a gzip bigger than a thread's share, many countries.
    let mut big = String::from("id,country,amount\n");
    for i in 0..30_000 {
        big.push_str(&format!("{i},c{},{}.5\n", i % 3000, i % 100));
    }
    wd.write("in/big.csv", &big);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut noisy = String::from("id,country,amount\n");
    let mut x: u64 = 7;
    for i in 0..60_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        noisy.push_str(&format!("{i},c{},{}\n", x % 3000, x >> 40));
    }
    std::io::Write::write_all(&mut gz, noisy.as_bytes()).expect("gz");
    wd.write("in/more.csv.gz", gz.finish().expect("gz"));
    wd.write("lk/c.csv", "country,label\nc1,one\nc2,two\n");
    wd.write(
        "p.toml",
        r#"
[source]
paths = "in/"
split_min_size = 65536

[[lookup]]
name = "labels"
paths = "lk/c.csv"
on = "country"
max_lookup_bytes = 320

[[enrich]]
name = "meta"
url = "http://127.0.0.1:9/meta/{id}?key=${env:SLUICE_EXPLAIN_TOKEN}"
concurrency = "auto"
max_concurrency = 32
rate_limit = "100/s"
cache = "cache/meta"
[enrich.extract]
title = "/title"

[[transform]]
sql = "SELECT country, sum(amount) AS total FROM source GROUP BY country"

[sink]
path = "out"
partition_by = ["country"]
"#,
    );
    let text = wd
        .sluice()
        .args(["explain", "p.toml", "--threads", "2"])
        .env("SLUICE_EXPLAIN_TOKEN", "secret-token-123")
        .output()
        .expect("run");
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(!text.contains("secret-token-123"), "{text}");
    insta::assert_snapshot!("splits_enrich_warnings", text);
}

/// Sampling a `partition_by` column meets the input's bad rows like a run would: explain
/// still answers (it used to stop at "rejected rows have nowhere to go") and writes nothing.
#[test]
fn explain_a_partitioned_output_over_bad_rows() {
    let wd = Workdir::new();
    wd.write("in/a.csv", "id,cat\n1,x\n2,y,extra\n3,x\n");
    wd.write(
        "p.toml",
        "[source]\npaths = \"in\"\n[sink]\npath = \"out\"\npartition_by = [\"cat\"]\n",
    );
    // A temporary folder of its own: the shared one also holds the scratch folders of
    // other tests' explains while they run (that raced under a parallel test run).
    let tmp = wd.path("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let out = wd
        .sluice()
        .args(["explain", "p.toml"])
        .env("TMPDIR", &tmp)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("partitioned by cat"), "{text}");
    assert!(!wd.path("out").exists());
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .expect("tmp")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}
