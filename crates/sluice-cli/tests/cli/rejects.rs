//! Nothing lost: every bad row is rejected (or skipped, or stops the job) with its file,
//! physical line, byte offset, column and reason, and rows_in = rows_out + rejected + skipped.

use std::collections::BTreeSet;

use crate::workdir::Workdir;

const SCHEMA: &str = "id BIGINT, amount DOUBLE, day DATE, v DOUBLE";

/// (file, line, byte offset, column, kind) of every bad row in tests/data/bad/.
fn expected() -> BTreeSet<(String, u64, u64, Option<String>, String)> {
    let rows: [(&str, u64, u64, Option<&str>, &str); 11] = [
        ("fields.csv", 3, 27, None, "too_many_fields"),
        ("fields.csv", 4, 43, None, "too_few_fields"),
        (
            "quoted_newlines.csv",
            4,
            34,
            Some("amount"),
            "type_mismatch",
        ),
        ("types_crlf.csv", 3, 33, Some("amount"), "type_mismatch"),
        ("types_crlf.csv", 4, 51, Some("day"), "type_mismatch"),
        ("unterminated.csv", 4, 31, None, "unterminated_quote"),
        ("utf8.csv", 3, 23, None, "invalid_utf8"),
        ("json.ndjson", 2, 20, Some("v"), "type_mismatch"),
        ("json.ndjson", 3, 43, None, "malformed_json"),
        ("json.ndjson", 5, 60, None, "malformed_json"),
        ("json.ndjson", 7, 86, None, "malformed_json"),
    ];
    rows.iter()
        .map(|(f, l, o, c, k)| {
            (
                format!("bad/{f}"),
                *l,
                *o,
                c.map(str::to_string),
                k.to_string(),
            )
        })
        .collect()
}

fn corpus() -> Workdir {
    let wd = Workdir::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/bad");
    for entry in std::fs::read_dir(&dir).expect("corpus") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".csv") || name.ends_with(".ndjson") {
            wd.write(
                &format!("bad/{name}"),
                std::fs::read(entry.path()).expect("read"),
            );
        }
    }
    wd
}

fn rejects_of(wd: &Workdir, out: &str) -> BTreeSet<(String, u64, u64, Option<String>, String)> {
    wd.read(&format!("{out}/_rejects/rejects.ndjson"))
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["file"].as_str().unwrap_or_default().to_string(),
                v["line"].as_u64().unwrap_or_default(),
                v["byte_offset"].as_u64().unwrap_or_default(),
                v["column"].as_str().map(str::to_string),
                v["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// rows_in + rows_added_by_sql = rows_out + rows_rejected + rows_skipped +
/// rows_removed_by_sql, in total, and rows_in = rows_ok + rows_rejected + rows_skipped per
/// file.
pub(crate) fn assert_identity(report: &serde_json::Value) {
    let n = |k: &str| report[k].as_u64().unwrap_or(u64::MAX / 4);
    assert_eq!(
        n("rows_in") + n("rows_added_by_sql"),
        n("rows_out") + n("rows_rejected") + n("rows_skipped") + n("rows_removed_by_sql"),
        "accounting: {report}"
    );
    for f in report["files"].as_array().expect("files") {
        let m = |k: &str| f[k].as_u64().unwrap_or(u64::MAX);
        assert_eq!(
            m("rows_in"),
            m("rows_ok") + m("rows_rejected") + m("rows_skipped"),
            "{f}"
        );
    }
}

#[test]
fn reject_mode_records_every_bad_row_exactly() {
    let wd = corpus();
    let report = wd.ingest(&["bad", "--to", "out", "--schema", SCHEMA]);
    assert_identity(&report);
    assert_eq!(report["rows_rejected"], 11, "{report}");
    assert_eq!(report["rows_out"], 13);
    assert_eq!(rejects_of(&wd, "out"), expected());
    assert_eq!(report["rejects_path"], "out/_rejects");
    // The raw text is kept.
    let text = wd.read("out/_rejects/rejects.ndjson");
    assert!(text.contains("\"raw\":\"2,bob,2.5,extra\""), "{text}");
    // Readers of the output skip the _rejects folder.
    let n = wd.query("SELECT count(*) AS n FROM t", &[("t", "out")]);
    assert_eq!(n, ["n", "13"]);
}

#[test]
fn forced_splitting_gives_the_same_rejects_and_lines() {
    let wd = corpus();
    let whole = wd.ingest(&["bad", "--to", "whole", "--schema", SCHEMA, "--threads", "1"]);
    let split = wd.ingest(&[
        "bad",
        "--to",
        "split",
        "--schema",
        SCHEMA,
        "--threads",
        "4",
        "--split-min-size",
        "1",
    ]);
    assert_identity(&split);
    assert_eq!(whole["rows_out"], split["rows_out"]);
    assert_eq!(rejects_of(&wd, "whole"), rejects_of(&wd, "split"));
}

#[test]
fn big_files_split_with_bad_rows_keep_exact_lines() {
    let wd = Workdir::new();
    let mut csv = String::from("id,amount,text\n");
    let mut bad = BTreeSet::new();
    for i in 0..60_000u64 {
        let offset = csv.len() as u64;
        if i % 9_973 == 5 {
            csv.push_str(&format!("{i},oops,\"bad, row\"\n"));
            bad.insert(offset);
        } else if i % 100 == 0 {
            csv.push_str(&format!("{i},1.5,\"two\nlines\"\n"));
        } else {
            csv.push_str(&format!("{i},2.5,\"plain, text\"\n"));
        }
    }
    // Physical lines: every quoted line break adds one.
    let mut expected = BTreeSet::new();
    for offset in &bad {
        let line = 1 + csv.as_bytes()[..*offset as usize]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        expected.insert((line, *offset));
    }
    wd.write("big.csv", &csv);
    for threads in ["1", "4"] {
        let out = format!("out{threads}");
        let report = wd.ingest(&[
            "big.csv",
            "--to",
            &out,
            "--threads",
            threads,
            "--infer-rows",
            "3",
        ]);
        assert_identity(&report);
        assert_eq!(report["rows_rejected"], bad.len() as u64);
        if threads == "4" {
            assert!(report["input_partitions"].as_u64() >= Some(4), "{report}");
        }
        let got: BTreeSet<(u64, u64)> = rejects_of(&wd, &out)
            .into_iter()
            .map(|r| (r.1, r.2))
            .collect();
        assert_eq!(got, expected);
    }
}

#[test]
fn skip_mode_counts_and_writes_no_rejects() {
    let wd = corpus();
    let report = wd.ingest(&[
        "bad",
        "--to",
        "out",
        "--schema",
        SCHEMA,
        "--on-error",
        "skip",
    ]);
    assert_identity(&report);
    assert_eq!(report["rows_skipped"], 11);
    assert_eq!(report["rows_rejected"], 0);
    assert!(!wd.path("out/_rejects").exists());
}

#[test]
fn fail_mode_stops_at_the_first_bad_row_with_its_position() {
    let wd = corpus();
    let cases = [
        ("bad/fields.csv", "bad/fields.csv:3: expected 3 fields, found 4 (byte 27, too_many_fields)"),
        ("bad/types_crlf.csv", "bad/types_crlf.csv:3: cannot parse 'abc' as type 'Float64' (byte 33, column 'amount', type_mismatch)"),
        ("bad/utf8.csv", "bad/utf8.csv:3: the row is not valid UTF-8 (byte 23, invalid_utf8)"),
        ("bad/unterminated.csv", "bad/unterminated.csv:4: a quoted value is not closed before the end of the file (byte 31, unterminated_quote)"),
    ];
    for (file, message) in cases {
        let err = wd.fails(
            &[
                "ingest",
                file,
                "--to",
                "o",
                "--schema",
                SCHEMA,
                "--on-error",
                "fail",
            ],
            1,
        );
        assert_eq!(err.trim(), format!("error: {message}"));
        assert!(!wd.path("o").exists());
    }
}

fn faulty_inputs(wd: &Workdir) {
    wd.write("in/good.csv", "id,amount\n1,1.5\n2,2.5\n");
    wd.write("in/empty.csv", "");
    wd.write(
        "in/corrupt.parquet",
        b"PAR1 this is not parquet at all PAR1",
    );
    // A gzip stream cut in half.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, "id,amount\n".repeat(2000).as_bytes()).expect("gz");
    let full = gz.finish().expect("gz");
    wd.write("in/cut.csv.gz", &full[..full.len() / 2]);
}

#[test]
fn whole_file_faults_are_reported_and_the_rest_is_read() {
    let wd = Workdir::new();
    faulty_inputs(&wd);
    let err = wd.fails(&["ingest", "in", "missing.csv", "--to", "out"], 1);
    assert!(
        err.contains("4 input file(s) could not be read, nothing was written"),
        "{err}"
    );
    assert!(!wd.path("out").exists());
    let report = wd.ingest(&["in", "missing.csv", "--to", "out", "--allow-failed-files"]);
    assert_identity(&report);
    assert_eq!(report["rows_out"], 2, "{report}");
    let failed: BTreeSet<String> = report["files_failed"]
        .as_array()
        .expect("files_failed")
        .iter()
        .map(|f| f["file"].as_str().unwrap_or_default().to_string())
        .collect();
    let expected: BTreeSet<String> = [
        "in/empty.csv",
        "in/corrupt.parquet",
        "in/cut.csv.gz",
        "missing.csv",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(failed, expected, "{report}");
    for f in report["files_failed"].as_array().expect("files_failed") {
        assert!(!f["reason"].as_str().unwrap_or_default().is_empty(), "{f}");
    }
    // skip mode does the same.
    let report = wd.ingest(&[
        "in",
        "--to",
        "out2",
        "--on-error",
        "skip",
        "--allow-failed-files",
    ]);
    assert_eq!(report["files_failed"].as_array().map(Vec::len), Some(3));
}

#[test]
fn whole_file_faults_stop_fail_mode_with_one_line() {
    let wd = Workdir::new();
    faulty_inputs(&wd);
    for (input, expected) in [
        ("in/empty.csv", "in/empty.csv: file is empty"),
        ("in/corrupt.parquet", "in/corrupt.parquet:"),
        ("in/cut.csv.gz", "in/cut.csv.gz:"),
        ("missing.csv", "input not found: missing.csv"),
    ] {
        let err = wd.fails(
            &[
                "ingest",
                "in/good.csv",
                input,
                "--to",
                "o",
                "--on-error",
                "fail",
            ],
            1,
        );
        assert!(err.contains(expected), "{input}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!wd.path("o").exists());
    }
    // A glob matching nothing is an error in every mode.
    let err = wd.fails(&["ingest", "in/good.csv", "nothing/*.csv", "--to", "o"], 1);
    assert!(
        err.contains("no input files match 'nothing/*.csv'"),
        "{err}"
    );
}

#[test]
fn compressed_input_keeps_exact_lines() {
    let wd = corpus();
    let raw = std::fs::read(wd.path("bad/types_crlf.csv")).expect("read");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).expect("gz");
    wd.write("gz/types_crlf.csv.gz", gz.finish().expect("gz"));
    let report = wd.ingest(&["gz", "--to", "out", "--schema", SCHEMA]);
    assert_identity(&report);
    let got: BTreeSet<(u64, u64)> = rejects_of(&wd, "out")
        .into_iter()
        .map(|r| (r.1, r.2))
        .collect();
    assert_eq!(got, BTreeSet::from([(3, 33), (4, 51)]));
}

#[test]
fn rejects_can_go_to_a_chosen_file() {
    let wd = corpus();
    let report = wd.ingest(&[
        "bad/fields.csv",
        "--to",
        "out",
        "--schema",
        SCHEMA,
        "--rejects",
        "bad-rows/fields.ndjson",
    ]);
    assert_eq!(report["rejects_path"], "bad-rows/fields.ndjson");
    assert_eq!(wd.read("bad-rows/fields.ndjson").lines().count(), 2);
    assert!(!wd.path("out/_rejects").exists());
    // Single-file outputs keep theirs beside the file by default.
    let report = wd.ingest(&["bad/fields.csv", "--to", "one.csv", "--schema", SCHEMA]);
    assert_eq!(report["rejects_path"], "one.csv_rejects");
    assert_eq!(wd.read("one.csv_rejects/rejects.ndjson").lines().count(), 2);
}
