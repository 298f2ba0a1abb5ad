//! Nothing lost beyond CSV: NOT NULL columns in every format, Parquet files that break
//! mid-read, per-file counts for columnar inputs, Parquet rejects and `--allow-empty`.

use crate::rejects::assert_identity;
use crate::workdir::Workdir;

/// A Parquet file written by sluice from CSV text.
fn parquet(wd: &Workdir, name: &str, csv: &str) {
    let src = format!("{name}.src.csv");
    wd.write(&src, csv);
    wd.ok(&["ingest", &src, "--to", name, "--quiet"]);
    std::fs::remove_file(wd.path(&src)).expect("rm");
}

fn lines(wd: &Workdir, path: &str) -> Vec<serde_json::Value> {
    wd.read(path)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

#[test]
fn not_null_columns_reject_nulls_in_every_format() {
    let wd = Workdir::new();
    wd.write("in/a.csv", "id,name\n1,a\n,b\n3,c\n");
    wd.write(
        "in/b.ndjson",
        "{\"id\":4,\"name\":\"d\"}\n{\"id\":null,\"name\":\"e\"}\n{\"name\":\"f\"}\n",
    );
    parquet(&wd, "in/c.parquet", "id,name\n7,g\n,h\n9,i\n");
    let report = wd.ingest(&["in", "--to", "out", "--schema", "id BIGINT NOT NULL"]);
    assert_identity(&report);
    assert_eq!(report["rows_in"], 9, "{report}");
    assert_eq!(report["rows_out"], 5);
    assert_eq!(report["rows_rejected"], 4);
    let mut got: Vec<(String, u64, String, String)> = lines(&wd, "out/_rejects/rejects.ndjson")
        .iter()
        .map(|v| {
            (
                v["file"].as_str().unwrap_or_default().to_string(),
                v["line"].as_u64().unwrap_or_default(),
                v["column"].as_str().unwrap_or_default().to_string(),
                v["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, u64, String, String)> = [
        ("in/a.csv", 3),
        ("in/b.ndjson", 2),
        ("in/b.ndjson", 3),
        ("in/c.parquet", 2),
    ]
    .iter()
    .map(|(f, l)| (f.to_string(), *l, "id".into(), "null_in_not_null".into()))
    .collect();
    assert_eq!(got, want);
    // The raw text of a Parquet row is the row as JSON.
    let text = wd.read("out/_rejects/rejects.ndjson");
    assert!(
        text.contains(r#""raw":"{\"id\":null,\"name\":\"h\"}""#),
        "{text}"
    );
    // Every file is counted on its own, Parquet included.
    let files = report["files"].as_array().expect("files");
    assert_eq!(files.len(), 3, "{report}");
    for f in files {
        assert_eq!(f["rows_in"], 3, "{f}");
        assert_eq!(
            f["rows_rejected"],
            if f["file"] == "in/b.ndjson" { 2 } else { 1 }
        );
    }
    // fail mode stops at the first one with its place.
    let err = wd.fails(
        &[
            "ingest",
            "in/c.parquet",
            "--to",
            "o",
            "--schema",
            "id BIGINT NOT NULL",
            "--on-error",
            "fail",
        ],
        1,
    );
    assert_eq!(
        err.trim(),
        "error: in/c.parquet: row 2: null in NOT NULL column 'id' (null_in_not_null)"
    );
    // A file without the column at all is a whole-file fault.
    wd.write("other/d.csv", "name\nx\n");
    let report = wd.ingest(&[
        "in/a.csv",
        "other/d.csv",
        "--to",
        "out2",
        "--schema",
        "id BIGINT NOT NULL",
        "--allow-failed-files",
    ]);
    assert_identity(&report);
    assert_eq!(report["files_failed"][0]["file"], "other/d.csv", "{report}");
    let reason = report["files_failed"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("no column 'id'"), "{reason}");
}

/// A Parquet file whose footer is fine but whose data pages are garbage.
fn broken_parquet(wd: &Workdir, name: &str) {
    let csv: String = std::iter::once("id,name\n".to_string())
        .chain((0..5000).map(|i| format!("{i},name{i}\n")))
        .collect();
    parquet(wd, name, &csv);
    let mut bytes = std::fs::read(wd.path(name)).expect("read");
    // The first page's header, right after the magic bytes: the footer still opens the file
    // and tells its 5000 rows, and the read breaks at the first page whatever the encoding.
    // (Bytes changed inside compressed plain values can decode to other values without an
    // error: Parquet pages carry no checksum unless written with one.)
    assert_eq!(&bytes[..4], b"PAR1");
    for b in &mut bytes[4..68] {
        *b = 0xff;
    }
    wd.write(name, bytes);
}

#[test]
fn a_parquet_file_breaking_mid_read_is_reported_and_the_rest_is_read() {
    let wd = Workdir::new();
    broken_parquet(&wd, "in/broken.parquet");
    parquet(&wd, "in/good.parquet", "id,name\n1,a\n2,b\n");
    wd.write("in/good.csv", "id,name\n3,c\n");
    for mode in ["reject", "skip"] {
        // regression: a broken file used to leave exit 0 and a silent summary. Without
        // --allow-failed-files nothing is written and the error names the file.
        let out = format!("out-{mode}");
        let err = wd.fails(&["ingest", "in", "--to", &out, "--on-error", mode], 1);
        assert!(
            err.starts_with("error: 1 input file(s) could not be read, nothing was written: in/broken.parquet: "),
            "{err}"
        );
        assert!(err.contains("of 5000 rows read"), "{err}");
        assert!(!wd.path(&out).exists());
        let report = wd.ingest(&[
            "in",
            "--to",
            &out,
            "--on-error",
            mode,
            "--allow-failed-files",
        ]);
        assert_identity(&report);
        let failed = report["files_failed"].as_array().expect("files_failed");
        assert_eq!(failed.len(), 1, "{report}");
        assert_eq!(failed[0]["file"], "in/broken.parquet");
        // The footer's row count, independent of the reader: every row is either read
        // (and in the output) or named as unread.
        assert_eq!(failed[0]["rows_expected"], 5000, "{report}");
        let read = failed[0]["rows_read"].as_u64().expect("rows_read");
        assert!(read < 5000, "{report}");
        assert_eq!(
            report["rows_unread"].as_u64(),
            Some(5000 - read),
            "{report}"
        );
        assert_eq!(report["rows_out"].as_u64(), Some(3 + read), "{report}");
    }
    // The summary says so in its first lines.
    let out = wd
        .sluice()
        .args([
            "ingest",
            "in",
            "--to",
            "out-summary",
            "--allow-failed-files",
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let second = stderr.lines().nth(1).unwrap_or_default();
    assert!(
        second.contains("FAILED: 1 input file(s) could not be read"),
        "{stderr}"
    );
    let err = wd.fails(&["ingest", "in", "--to", "o", "--on-error", "fail"], 1);
    assert!(err.starts_with("error: in/broken.parquet: "), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!wd.path("o").exists());
}

#[test]
fn rejects_can_be_written_as_parquet() {
    let wd = Workdir::new();
    wd.write("in.csv", "id,amount\n1,1.5\n2,abc\n3,x,y\n4,4.5\n");
    let schema = "id BIGINT, amount DOUBLE";
    let report = wd.ingest(&[
        "in.csv",
        "--to",
        "out",
        "--schema",
        schema,
        "--rejects-format",
        "parquet",
    ]);
    assert_identity(&report);
    assert_eq!(report["rows_rejected"], 2);
    assert!(!wd.path("out/_rejects/rejects.ndjson").exists());
    let rows = wd.query(
        "SELECT line, kind, raw FROM r ORDER BY line",
        &[("r", "out/_rejects/rejects.parquet")],
    );
    assert_eq!(
        rows,
        [
            "line,kind,raw",
            "3,type_mismatch,\"2,abc\"",
            "4,too_many_fields,\"3,x,y\""
        ]
    );
    // A --rejects path ending in .parquet picks the format.
    wd.ingest(&[
        "in.csv",
        "--to",
        "out2",
        "--schema",
        schema,
        "--rejects",
        "bad.parquet",
    ]);
    let n = wd.query("SELECT count(*) AS n FROM r", &[("r", "bad.parquet")]);
    assert_eq!(n, ["n", "2"]);
    let err = wd.fails(
        &["ingest", "in.csv", "--to", "o", "--rejects-format", "csv"],
        1,
    );
    assert!(
        err.contains("rejects format must be ndjson or parquet"),
        "{err}"
    );
}

#[test]
fn allow_empty_turns_an_empty_glob_into_an_empty_output() {
    let wd = Workdir::new();
    let err = wd.fails(&["ingest", "none/*.csv", "--to", "o"], 1);
    assert!(err.contains("no input files match 'none/*.csv'"), "{err}");
    let report = wd.ingest(&[
        "none/*.csv",
        "--to",
        "out",
        "--allow-empty",
        "--schema",
        "id BIGINT, name TEXT",
    ]);
    assert_eq!(report["rows_in"], 0, "{report}");
    assert_eq!(report["rows_out"], 0);
    let manifest: serde_json::Value =
        serde_json::from_str(&wd.read("out/_SUCCESS")).expect("manifest");
    assert_eq!(manifest["rows"], 0);
    let schema = wd.ok(&["schema", "out"]);
    assert!(schema.contains("id") && schema.contains("name"), "{schema}");
    // Other inputs are still read; a missing named file is still an error.
    wd.write("a.csv", "id,name\n1,a\n");
    let report = wd.ingest(&["none/*.csv", "a.csv", "--to", "out2", "--allow-empty"]);
    assert_eq!(report["rows_out"], 1);
    wd.fails(
        &[
            "ingest",
            "nope.csv",
            "--to",
            "o",
            "--allow-empty",
            "--on-error",
            "fail",
        ],
        1,
    );
}
