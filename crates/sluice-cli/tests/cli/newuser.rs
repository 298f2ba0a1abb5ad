//! Regressions found by trying sluice as a new user would: rows lost with exit code 0.
//! Every test here failed before its fix.

use std::path::Path;

use crate::rejects::assert_identity;
use crate::workdir::Workdir;

/// CSV text with a header and `rows` rows `i,name-i`.
fn csv_rows(rows: usize) -> String {
    std::iter::once("id,name\n".to_string())
        .chain((0..rows).map(|i| format!("{i},name-{i}\n")))
        .collect()
}

/// regression: `count(*)` over a CSV or NDJSON table returned 0 (a scan that projects no
/// column lost its row count), and `--on-error fail` failed with an arrow message.
#[test]
fn a_scan_without_columns_still_counts_its_rows() {
    let wd = Workdir::new();
    wd.write("x.csv", csv_rows(3));
    wd.write("x.ndjson", "{\"a\":1}\n{\"a\":2}\n\n{\"a\":3}\n");
    wd.write("x.tsv", "a\tb\n1\t2\n3\t4\n5\t6\n");
    for input in ["x.csv", "x.ndjson", "x.tsv"] {
        for mode in ["reject", "skip", "fail"] {
            let out = wd.ok(&[
                "query",
                "SELECT count(*) AS n FROM t",
                "--table",
                &format!("t={input}"),
                "--output",
                "csv",
                "--on-error",
                mode,
            ]);
            assert_eq!(out, "n\n3\n", "{input} {mode}");
        }
        let out = wd.query("SELECT 1 AS one FROM t", &[("t", input)]);
        assert_eq!(out, ["one", "1", "1", "1"], "{input}");
    }
    // The same in a pipeline's SQL step, with the row accounting intact.
    wd.write(
        "p.toml",
        "[source]\npaths = [\"x.csv\"]\n\n[[transform]]\nsql = \"SELECT count(*) AS n FROM source\"\n\n[sink]\npath = \"out.csv\"\n",
    );
    wd.ok(&["run", "p.toml", "--quiet"]);
    assert_eq!(wd.read("out.csv"), "n\n3\n");
}

/// Folder names that other tools (and object_store's path encoding) get wrong.
const ODD_NAMES: &[&str] = &[
    "héllo",
    "pct%41",
    "100%",
    "hash#1",
    "br[a]ck",
    "ti~de",
    "日本語",
    "Ελληνικά",
    "עברית",
    "emoji 😀",
    "sp ace",
    "q?mark",
    "a{b}c",
    "plus+amp&eq=",
    "'quote\"",
];

/// regression: files whose path held `#`, `[`, `%`, `~` or non-ASCII letters were reported
/// as "vanished during the run" and lost, with exit 0.
#[test]
fn odd_paths_are_read_written_and_read_back() {
    let wd = Workdir::new();
    let mut expected = 0;
    for (i, name) in ODD_NAMES.iter().enumerate() {
        wd.write(&format!("in/{name}/{name}.csv"), csv_rows(i + 1));
        expected += i + 1;
    }
    // A very long name (255 bytes is the usual limit of one name).
    let long = "l".repeat(240);
    wd.write(&format!("in/{long}/x.csv"), csv_rows(7));
    expected += 7;
    let report = wd.ingest(&["in", "--to", "out", "--file-column", "src"]);
    assert_identity(&report);
    assert_eq!(
        report["rows_in"].as_u64(),
        Some(expected as u64),
        "{report}"
    );
    assert_eq!(
        report["rows_out"].as_u64(),
        Some(expected as u64),
        "{report}"
    );
    assert_eq!(report["files_failed"], serde_json::json!([]), "{report}");
    // Read back through a folder, each file by name, and a glob.
    let n = wd.query("SELECT count(*) FROM t", &[("t", "out")]);
    assert_eq!(n[1], expected.to_string());
    let per_file = wd.query(
        "SELECT src, count(*) FROM t GROUP BY src ORDER BY src",
        &[("t", "out")],
    );
    assert_eq!(per_file.len(), ODD_NAMES.len() + 2, "{per_file:?}");
    for (i, name) in ODD_NAMES.iter().enumerate() {
        let input = format!("in/{name}/{name}.csv");
        // Named as written: a path that exists is read as itself, glob characters or not
        // (regression: `a[1]/a[1].csv` was taken for a pattern and matched nothing).
        let got = wd.query("SELECT count(*) FROM t", &[("t", &input)]);
        assert_eq!(got[1], (i + 1).to_string(), "{input}");
        // And as a glob with its special characters escaped.
        if name.contains(['[', '?', '*', '{']) {
            let got = wd.query("SELECT count(*) FROM t", &[("t", &glob_escape(&input))]);
            assert_eq!(got[1], (i + 1).to_string(), "{input}");
        }
    }
    let got = wd.query("SELECT count(*) FROM t", &[("t", "in/**/*.csv")]);
    assert_eq!(got[1], expected.to_string());
}

fn glob_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '[' | ']' | '?' | '*' | '{' | '}' => format!("[{c}]"),
            c => c.to_string(),
        })
        .collect()
}

/// regression: sluice's own partition folders (`p=a%2Fb`, `p=héllo`) were lost when read
/// back.
#[test]
fn partition_values_survive_the_round_trip() {
    let wd = Workdir::new();
    let values = [
        "a/b", "héllo", "%", "%41", "#x", "~", "[x]", "a b", "日本", "😀", "..", ".", "=",
    ];
    let mut csv = String::from("p,v\n");
    for (i, v) in values.iter().enumerate() {
        csv.push_str(&format!("\"{v}\",{i}\n"));
    }
    wd.write("in.csv", &csv);
    let report = wd.ingest(&["in.csv", "--to", "out", "--partition-by", "p"]);
    assert_eq!(report["rows_out"].as_u64(), Some(values.len() as u64));
    // Nothing escapes the output root.
    for entry in std::fs::read_dir(wd.root()).expect("ls") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            ["in.csv", "out"].contains(&name.as_ref())
                || name.starts_with("report-")
                || name.starts_with(".sluice-lock"),
            "{name}"
        );
    }
    let got = wd.query("SELECT p, v FROM t ORDER BY v", &[("t", "out")]);
    let want: Vec<String> = std::iter::once("p,v".to_string())
        .chain(values.iter().enumerate().map(|(i, v)| {
            if v.contains([',', '"']) {
                format!("\"{v}\",{i}")
            } else {
                format!("{v},{i}")
            }
        }))
        .collect();
    assert_eq!(got, want);
}

/// regression: `sluice query` over a CSV with one bad row returned no rows of that file
/// (the rejects had nowhere to go, and that made the whole file "fail"); skipped rows
/// vanished without a word.
#[test]
fn query_keeps_good_rows_and_says_where_bad_ones_went() {
    let wd = Workdir::new();
    wd.write("x.csv", "a,b\n1,x\nzz,y\n3,z\n");
    let rejects = wd.path("rej");
    let out = wd
        .sluice()
        .args([
            "query",
            "SELECT a, b FROM t ORDER BY a",
            "--table",
            "t=x.csv",
            "--schema",
            "a BIGINT",
            "--output",
            "csv",
            "--rejects",
        ])
        .arg(&rejects)
        .output()
        .expect("run");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a,b\n1,x\n3,z\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("table t: 1 row(s) rejected, not in the result"),
        "{stderr}"
    );
    let file = rejects.join("t").join("rejects.ndjson");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    let record: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&file).expect("rejects").trim())
            .expect("json");
    assert_eq!(record["line"], 3);
    assert_eq!(record["raw"], "zz,y");
    // Without --rejects the file goes to a fresh temporary folder, named on stderr.
    let out = wd
        .sluice()
        .args([
            "query",
            "SELECT sum(a) FROM t",
            "--table",
            "t=x.csv",
            "--schema",
            "a BIGINT",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = stderr
        .split("(see ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("a rejects path on stderr");
    assert!(Path::new(path).is_file(), "{stderr}");
    let _ = std::fs::remove_dir_all(
        Path::new(path)
            .parent()
            .and_then(Path::parent)
            .expect("dir"),
    );
    // skip mode says how many rows it dropped.
    let out = wd
        .sluice()
        .args([
            "query",
            "SELECT count(a) AS n FROM t",
            "--table",
            "t=x.csv",
            "--schema",
            "a BIGINT",
            "--on-error",
            "skip",
            "--output",
            "csv",
        ])
        .output()
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n2\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("table t: 1 bad row(s) skipped"), "{stderr}");
}

/// regression: a second `--mode append` erased the earlier job's `_rejects`.
#[test]
fn append_keeps_earlier_rejects() {
    let wd = Workdir::new();
    wd.write("a.csv", "a,b\n1,x\nzz,y\n");
    wd.write("b.csv", "a,b\n2,x\nqq,y\n");
    for input in ["a.csv", "b.csv", "a.csv"] {
        let report = wd.ingest(&[
            input, "--to", "out", "--schema", "a BIGINT", "--mode", "append",
        ]);
        assert_eq!(report["rows_rejected"], 1);
    }
    let mut raws: Vec<String> = std::fs::read_dir(wd.path("out/_rejects"))
        .expect("rejects")
        .flat_map(|e| {
            let text = std::fs::read_to_string(e.expect("entry").path()).expect("read");
            text.lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).expect("json");
                    v["raw"].as_str().unwrap_or_default().to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    raws.sort();
    assert_eq!(raws, ["qq,y", "zz,y", "zz,y"]);
    let n = wd.query("SELECT count(*) FROM t", &[("t", "out")]);
    assert_eq!(n[1], "3");
}

/// regression: a commit of `out` deleted the staging folder of a job writing `out-2`
/// (`.sluice-staging-out-` is a prefix of both).
#[test]
fn a_commit_leaves_other_targets_staging_alone() {
    let wd = Workdir::new();
    wd.write("a.csv", csv_rows(2));
    let other = wd.path(".sluice-staging-out-2-0123456789ab");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("part-0.parquet"), b"in progress").expect("write");
    wd.ingest(&["a.csv", "--to", "out"]);
    wd.ingest(&["a.csv", "--to", "out", "--mode", "overwrite"]);
    assert!(other.join("part-0.parquet").is_file());
    // Its own leftovers are still cleaned up.
    let own = wd.path(".sluice-staging-out-fedcba987654");
    std::fs::create_dir_all(&own).expect("mkdir");
    wd.ingest(&["a.csv", "--to", "out", "--mode", "overwrite"]);
    assert!(!own.exists());
    // regression: a `.sluice-lock-*` file was left beside every output.
    let locks: Vec<String> = std::fs::read_dir(wd.root())
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".sluice-lock"))
        .collect();
    assert!(locks.is_empty(), "{locks:?}");
}

/// regression: appending linked whatever an existing manifest listed, `../` included, and
/// a manifest that could not be read was taken for "no manifest".
#[test]
fn append_refuses_a_manifest_pointing_outside_the_output() {
    let wd = Workdir::new();
    wd.write("a.csv", csv_rows(2));
    wd.ingest(&["a.csv", "--to", "out"]);
    wd.write("secret.parquet", b"not yours");
    let manifest = wd.read("out/_SUCCESS");
    let mut m: serde_json::Value = serde_json::from_str(&manifest).expect("manifest");
    m["files"][0]["path"] = serde_json::json!("../secret.parquet");
    wd.write("out/_SUCCESS", serde_json::to_vec(&m).expect("json"));
    let err = wd.fails(&["ingest", "a.csv", "--to", "out", "--mode", "append"], 1);
    assert!(
        err.contains("lists '../secret.parquet', which is not a file inside the output"),
        "{err}"
    );
    assert_eq!(
        wd.read("out/_SUCCESS"),
        serde_json::to_string(&m).expect("json")
    );
    // A manifest that is not JSON stops the append too.
    wd.write("out/_SUCCESS", "{ truncated");
    let err = wd.fails(&["ingest", "a.csv", "--to", "out", "--mode", "append"], 1);
    assert!(err.contains("out/_SUCCESS"), "{err}");
}

fn nested(depth: usize) -> String {
    format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth))
}

/// regression: NDJSON nested 100,000 deep overflowed the stack and aborted (exit 134); a
/// file whose only line was 10,000 deep read as one row of nothing.
#[test]
fn deeply_nested_json_is_a_rejected_row_not_a_crash() {
    let wd = Workdir::new();
    let deep_object = format!(
        "{{\"a\":{}1{}}}",
        "{\"b\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let lines = [
        "{\"a\":\"x\",\"k\":1}".to_string(),
        nested(100_000),
        deep_object.clone(),
        nested(99), // 100 levels with the outer object: the limit itself is fine
        nested(100),
        "{\"a\":\"y\",\"k\":2}".to_string(),
    ];
    wd.write("deep.ndjson", lines.join("\n") + "\n");
    let report = wd.ingest(&["deep.ndjson", "--to", "out"]);
    assert_identity(&report);
    assert_eq!(report["rows_in"], 6, "{report}");
    assert_eq!(report["rows_out"], 3, "{report}");
    assert_eq!(report["rows_rejected"], 3, "{report}");
    let kinds: Vec<(u64, String)> = wd
        .read("out/_rejects/rejects.ndjson")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["line"].as_u64().unwrap_or_default(),
                v["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (2, "too_deep".into()),
            (3, "too_deep".into()),
            (5, "too_deep".into())
        ]
    );
    // A file of one such line: one row in, one rejected.
    wd.write("one.ndjson", deep_object + "\n");
    let report = wd.ingest(&["one.ndjson", "--to", "out1"]);
    assert_eq!(
        (report["rows_in"].clone(), report["rows_rejected"].clone()),
        (serde_json::json!(1), serde_json::json!(1)),
        "{report}"
    );
    // In fail mode: one line naming the file and line.
    let err = wd.fails(
        &["ingest", "deep.ndjson", "--to", "o", "--on-error", "fail"],
        1,
    );
    assert!(
        err.starts_with("error: deep.ndjson:2: JSON nested deeper than 100 levels"),
        "{err}"
    );
    // A lookup file is read the same way: a clear error, no crash.
    wd.write("data.csv", "k,v\n1,a\n");
    wd.write(
        "p.toml",
        "[source]\npaths = [\"data.csv\"]\n\n[[lookup]]\nname = \"l\"\npaths = [\"deep.ndjson\"]\non = \"k\"\n\n[sink]\npath = \"lo\"\n",
    );
    let err = wd.fails(&["run", "p.toml"], 1);
    assert!(err.contains("nested deeper than 100 levels"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// regression: NDJSON values of different kinds in one column (`"ok"` then `{"a":1}`) failed
/// the job although they meet at string; a nested column written to CSV failed without
/// naming the column.
#[test]
fn json_values_of_several_kinds_meet_at_string() {
    let wd = Workdir::new();
    wd.write(
        "m.ndjson",
        "{\"a\":\"ok\",\"n\":1}\n{\"a\":{\"x\":1},\"n\":2}\n{\"a\":[1,\"two\"],\"n\":3}\n{\"a\":5,\"n\":4}\n{\"a\":true,\"n\":5}\n{\"a\":null,\"n\":6}\n",
    );
    let got = wd.query("SELECT a, n FROM t ORDER BY n", &[("t", "m.ndjson")]);
    assert_eq!(
        got,
        [
            "a,n",
            "ok,1",
            "\"{\"\"x\"\":1}\",2",
            "\"[1,\"\"two\"\"]\",3",
            "5,4",
            "true,5",
            ",6"
        ]
    );
    // A string next to a list only (arrow alone would read a list and refuse the string).
    wd.write("l.ndjson", "{\"a\":\"ok\"}\n{\"a\":[\"x\",\"y\"]}\n");
    let got = wd.query("SELECT a FROM t", &[("t", "l.ndjson")]);
    assert_eq!(got, ["a", "ok", "\"[\"\"x\"\",\"\"y\"\"]\""]);
    // Nested columns written to CSV hold their JSON text.
    wd.write(
        "s.ndjson",
        "{\"s\":{\"x\":1,\"y\":[1,2]},\"n\":1}\n{\"s\":null,\"n\":2}\n",
    );
    let report = wd.ingest(&["s.ndjson", "--to", "s.csv"]);
    assert_eq!(report["rows_out"], 2);
    assert_eq!(
        wd.read("s.csv"),
        "n,s\n1,\"{\"\"x\"\":1,\"\"y\"\":[1,2]}\"\n2,\n"
    );
}

/// regression: wide CSVs were quadratic (10,000 columns x 3 rows took 7.8 s in a release
/// build and 1.3 GB; 100,000 columns did not finish): per-column searches in the union by
/// name, a projection on every file, and batches sized rows x columns up front.
#[test]
fn wide_csv_files_are_read_and_bounded() {
    let wd = Workdir::new();
    let wide = |n: usize, rows: usize| -> String {
        let mut s: String = (0..n)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(",");
        s.push('\n');
        for r in 0..rows {
            s.push_str(
                &(0..n)
                    .map(|i| (i + r).to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            s.push('\n');
        }
        s
    };
    wd.write("w.csv", wide(10_000, 3));
    let report = wd.ingest(&["w.csv", "--to", "w.parquet"]);
    assert_eq!(report["rows_out"], 3);
    let got = wd.query(
        "SELECT count(*), sum(c9999), min(c0) FROM t",
        &[("t", "w.parquet")],
    );
    assert_eq!(got[1], "3,30000,0");
    // Beyond the bound: one clear line, not minutes of work.
    wd.write("too.csv", wide(100_001, 1));
    let err = wd.fails(&["ingest", "too.csv", "--to", "o", "--on-error", "fail"], 1);
    assert_eq!(
        err.trim(),
        "error: too.csv: has 100001 columns, more than the 100000 sluice reads"
    );
}

/// regression: a partition value of 300 characters failed the whole job (`File name too
/// long`); now the row is rejected with its reason and every other row is written.
#[test]
fn a_partition_value_too_long_for_a_folder_is_a_rejected_row() {
    let wd = Workdir::new();
    let long = "x".repeat(300);
    let wide_letters = "é".repeat(130); // 260 bytes
    let fits = "é".repeat(120); // 240 bytes + "p=" = 242
    wd.write(
        "in.csv",
        format!("p,v\nshort,1\n{long},2\n{wide_letters},3\n{fits},4\n"),
    );
    let report = wd.ingest(&["in.csv", "--to", "out", "--partition-by", "p"]);
    assert_identity(&report);
    assert_eq!(report["rows_out"], 2, "{report}");
    assert_eq!(report["rows_rejected"], 2, "{report}");
    assert_eq!(report["rows_rejected_at_write"], 2, "{report}");
    let kinds: Vec<String> = wd
        .read("out/_rejects/rejects.ndjson")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            assert!(
                v["raw"].as_str().unwrap_or_default().contains("\"v\":"),
                "{v}"
            );
            v["kind"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        ["partition_value_too_long", "partition_value_too_long"]
    );
    let got = wd.query("SELECT v FROM t ORDER BY v", &[("t", "out")]);
    assert_eq!(got, ["v", "1", "4"]);
}

/// regression: a folder listing silently followed links out of the named folder.
#[test]
fn links_out_of_an_input_folder_are_not_followed_unless_asked() {
    let wd = Workdir::new();
    wd.write("in/a.csv", csv_rows(2));
    wd.write("secret/x.csv", csv_rows(3));
    wd.write("secretdir/y.csv", csv_rows(4));
    let link = |target: &str, at: &str| {
        std::os::unix::fs::symlink(wd.path(target), wd.path(at)).expect("symlink");
    };
    link("secret/x.csv", "in/out.csv");
    link("secretdir", "in/dir");
    link("in", "in/loop"); // a loop back to the root
    for input in ["in", "in/**/*.csv"] {
        let report = wd.ingest(&[input, "--to", "o", "--mode", "overwrite"]);
        assert_eq!(report["rows_in"], 2, "{input}: {report}");
        let skipped = report["skipped_files"].to_string();
        assert!(
            skipped.contains("in/out.csv (a link out of the input folder"),
            "{skipped}"
        );
        assert!(skipped.contains("in/dir (a link out"), "{skipped}");
        let report = wd.ingest(&[
            input,
            "--to",
            "o",
            "--mode",
            "overwrite",
            "--follow-symlinks",
        ]);
        assert_eq!(report["rows_in"], 9, "{input}: {report}");
    }
}

/// `--csv-safe`: spreadsheet-bound CSV never starts a text cell with a formula character.
#[test]
fn csv_safe_output_defuses_formulas() {
    let wd = Workdir::new();
    wd.write(
        "in.csv",
        "n,t\n-5,=1+1\n6,+SUM(A1)\n7,-x\n8,@cmd\n9,\"\ttab\"\n10,plain\n11,\n",
    );
    wd.ingest(&["in.csv", "--to", "safe.csv", "--csv-safe"]);
    assert_eq!(
        wd.read("safe.csv"),
        "n,t\n-5,'=1+1\n6,'+SUM(A1)\n7,'-x\n8,'@cmd\n9,'\ttab\n10,plain\n11,\n"
    );
    // Without the flag the values are written as they are.
    wd.ingest(&["in.csv", "--to", "raw.csv"]);
    assert!(wd.read("raw.csv").contains("\n-5,=1+1\n"));
}

/// regression: one 2.2 GB value panicked in arrow ("byte array offset overflow") after
/// 8.5 GB of memory. A record over `--max-record-bytes` is a rejected row, skipped without
/// being held (here with a small limit; the default is 64 MiB).
#[test]
fn a_record_over_the_size_limit_is_a_rejected_row() {
    let wd = Workdir::new();
    let mut csv = String::from("a,b\n");
    for i in 0..5 {
        csv.push_str(&format!("{i},x\n"));
    }
    csv.push_str(&format!("5,\"{}\nmore\"\n", "y".repeat(5000))); // line 7, two lines long
    for i in 6..10 {
        csv.push_str(&format!("{i},z\n"));
    }
    csv.push_str(&format!("10,{}\n11,end\n", "w".repeat(3000))); // line 13
    wd.write("big.csv", &csv);
    wd.write(
        "big.ndjson",
        format!(
            "{{\"a\":1}}\n{{\"a\":\"{}\"}}\n{{\"a\":3}}\n",
            "v".repeat(4000)
        ),
    );
    for (input, rows_out, lines) in [("big.csv", 10, vec![7, 13]), ("big.ndjson", 2, vec![2])] {
        let report = wd.ingest(&[
            input,
            "--to",
            &format!("out-{}", input.replace('.', "-")),
            "--max-record-bytes",
            "1000",
        ]);
        assert_identity(&report);
        assert_eq!(report["rows_out"], rows_out, "{report}");
        let got: Vec<(u64, String, usize)> = wd
            .read(&format!(
                "out-{}/_rejects/rejects.ndjson",
                input.replace('.', "-")
            ))
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                (
                    v["line"].as_u64().unwrap_or_default(),
                    v["kind"].as_str().unwrap_or_default().to_string(),
                    v["raw"].as_str().unwrap_or_default().len(),
                )
            })
            .collect();
        let want: Vec<(u64, String, usize)> = lines
            .iter()
            .map(|&l| (l, "record_too_large".to_string(), 1000))
            .collect();
        assert_eq!(got, want, "{input}");
    }
    // A stray quote inside an unquoted field is literal text (as csv-core reads it): it must
    // not make the size check see one endless quoted record.
    let mut stray = String::from("id,what\n1,5\" screen\n");
    for i in 2..200 {
        stray.push_str(&format!("{i},line {i}\n"));
    }
    wd.write("stray.csv", &stray);
    let report = wd.ingest(&["stray.csv", "--to", "o-stray", "--max-record-bytes", "100"]);
    assert_eq!(report["rows_out"], 199, "{report}");
    assert_eq!(report["rows_rejected"], 0, "{report}");
    let err = wd.fails(
        &[
            "ingest",
            "big.csv",
            "--to",
            "o",
            "--max-record-bytes",
            "1000",
            "--on-error",
            "fail",
        ],
        1,
    );
    assert!(
        err.starts_with("error: big.csv:7: the record is longer than 1000 bytes"),
        "{err}"
    );
}

/// A decompression bomb (a few KiB that inflate to 72 MiB) fails its file with one line
/// naming it, long before it is read out; `--max-compression-ratio` raises or removes the
/// limit; ordinary compressed files pass.
#[test]
fn a_decompression_bomb_fails_its_file() {
    use std::io::Write;
    let wd = Workdir::new();
    let mut inflated = b"a\n".to_vec();
    inflated.resize(72 << 20, b'0');
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&inflated).expect("compress");
    let gz = gz.finish().expect("compress");
    let zst = zstd::encode_all(&inflated[..], 3).expect("compress");
    assert!(
        zst.len() < 100_000 && gz.len() < 200_000,
        "{} {}",
        zst.len(),
        gz.len()
    );
    wd.write("bomb.csv.gz", &gz);
    wd.write("bomb.csv.zst", &zst);
    // An ordinary file: rows with ids compress a few times over.
    let mut ok_rows = zstd::stream::Encoder::new(Vec::new(), 3).expect("compress");
    ok_rows
        .write_all(csv_rows(200_000).as_bytes())
        .expect("compress");
    wd.write("fine/ok.csv.zst", ok_rows.finish().expect("compress"));
    for bomb in ["bomb.csv.gz", "bomb.csv.zst"] {
        let err = wd.fails(&["ingest", bomb, "--to", &format!("out-{bomb}")], 1);
        assert!(
            err.contains(&format!("{bomb}: decompresses to more than 100 times"))
                && err.contains("decompression bomb"),
            "{bomb}: {err}"
        );
        assert!(!wd.path(&format!("out-{bomb}")).exists(), "{bomb}");
    }
    // Raised past the file's ratio, the bomb is read: its one giant record is too large.
    let report = wd.ingest(&[
        "bomb.csv.zst",
        "--to",
        "out-raised",
        "--max-compression-ratio",
        "0",
    ]);
    assert_eq!(report["rows_rejected"].as_u64(), Some(1), "{report}");
    let report = wd.ingest(&["fine", "--to", "out-fine"]);
    assert_eq!(report["rows_out"].as_u64(), Some(200_000), "{report}");
}
