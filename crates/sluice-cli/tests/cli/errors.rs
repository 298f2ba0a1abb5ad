//! User mistakes: one clear line and the documented exit code.

use crate::workdir::Workdir;

#[test]
fn usage_errors_exit_2() {
    let wd = Workdir::new();
    wd.fails(&["ingest", "x.csv"], 2); // no --to
    wd.fails(&["ingest", "--to", "out"], 2); // no input
    wd.fails(&["ingest", "x.csv", "--to", "o", "--mode", "replace"], 2);
    wd.fails(&["ingest", "x.csv", "--to", "o", "--delimiter", "ab"], 2);
    wd.fails(&["ingest", "x.csv", "--to", "o", "--format-in", "xls"], 2);
    wd.fails(&["frobnicate"], 2);
    let help = wd.ok(&["--help"]);
    assert!(help.contains("ingest"));
}

#[test]
fn data_errors_exit_1_with_one_line() {
    let wd = Workdir::new();
    wd.write("a.csv", "id\n1\n");
    wd.write("empty.csv", "");
    wd.write("weird.xyz", "1,2\n");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["ingest", "missing.csv", "--to", "o"],
            "input not found: missing.csv",
        ),
        (
            vec!["ingest", "nothing/*.csv", "--to", "o"],
            "no input files match 'nothing/*.csv'",
        ),
        (
            vec!["ingest", "weird.xyz", "--to", "o"],
            "cannot tell the format of 'weird.xyz'",
        ),
        (
            vec!["ingest", "empty.csv", "--to", "o"],
            "empty.csv: file is empty",
        ),
        (
            vec!["ingest", "a.csv", "--to", "o", "--files", "0"],
            "--files must be at least 1",
        ),
        (
            vec!["ingest", "a.csv", "--to", "o", "--partition-by", "nope"],
            "partition_by column 'nope'",
        ),
        (
            vec![
                "ingest",
                "a.csv",
                "--to",
                "o",
                "--sql",
                "SELECT nope FROM source",
            ],
            "nope",
        ),
        (
            vec!["ingest", "a.csv", "--to", "o.orc"],
            "ORC output is not supported",
        ),
        (
            vec!["query", "SELECT 1", "-t", "bad"],
            "--table takes NAME=INPUT",
        ),
    ];
    for (args, expected) in cases {
        let err = wd.fails(&args, 1);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?} should print one line: {err}"
        );
        assert!(err.starts_with("error: "), "{err}");
    }
}

#[test]
fn output_inside_input_is_refused() {
    let wd = Workdir::new();
    wd.write("data/a.csv", "id\n1\n");
    wd.ingest(&["data", "--to", "data/out"]);
    // data/out now holds Parquet files: reading data/ again while replacing data/out would
    // read the old output and then delete it.
    let err = wd.fails(
        &["ingest", "data", "--to", "data/out", "--mode", "overwrite"],
        1,
    );
    assert!(err.contains("holds the input 'data/out/"), "{err}");
    assert!(
        wd.path("data/out/_SUCCESS").is_file(),
        "old output untouched"
    );
}

#[test]
fn a_bad_value_after_the_sample_names_the_file() {
    let wd = Workdir::new();
    let mut csv = String::from("id,n\n");
    for i in 0..50 {
        csv.push_str(&format!("{i},{i}\n"));
    }
    csv.push_str("50,abc\n");
    wd.write("late.csv", csv);
    let err = wd.fails(
        &[
            "ingest",
            "late.csv",
            "--to",
            "o",
            "--infer-rows",
            "10",
            "--on-error",
            "fail",
        ],
        1,
    );
    assert_eq!(
        err.trim(),
        "error: late.csv:52: cannot parse 'abc' as type 'Int64' (byte 285, column 'n', type_mismatch)"
    );
    assert!(!wd.path("o").exists(), "nothing is committed on failure");
    // The default, reject: the row goes to the rejects dataset, the rest is written.
    let report = wd.ingest(&["late.csv", "--to", "o", "--infer-rows", "10"]);
    assert_eq!(report["rows_in"], 51);
    assert_eq!(report["rows_out"], 50);
    assert_eq!(report["rows_rejected"], 1);
    let rejects = wd.read("o/_rejects/rejects.ndjson");
    let r: serde_json::Value = serde_json::from_str(rejects.trim()).expect("json");
    assert_eq!(r["line"], 52);
    assert_eq!(r["raw"], "50,abc");
}
