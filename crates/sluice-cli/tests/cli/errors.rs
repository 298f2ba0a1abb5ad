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

/// The catalogue: every option or pipeline mistake gives one `error:` line naming the
/// problem (clap adds a usage hint after the line for exit code 2).
#[test]
fn every_mistake_gives_one_clear_line() {
    let wd = Workdir::new();
    wd.write("a.csv", "id,name\n1,a\n");
    wd.write("notes.txt", "hello\n");
    let usage: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--threads", "0"],
            "'--threads <N>': must be at least 1",
        ),
        (
            vec!["--infer-rows", "0"],
            "'--infer-rows <N>': must be at least 1",
        ),
        (
            vec!["--on-error", "maybe"],
            "on-error must be fail, skip or reject",
        ),
        (vec!["--compression", "brotli"], "compression must be"),
        (vec!["--quote", "ab"], "quote must be one ASCII character"),
        (vec!["--split-min-size", "big"], "--split-min-size"),
        (vec!["--rejects-format", "xls"], "--rejects-format"),
        (
            vec!["--newlines-in-values", "maybe"],
            "--newlines-in-values",
        ),
    ];
    for (extra, expected) in usage {
        let mut args = vec!["ingest", "a.csv", "--to", "o"];
        args.extend(extra);
        let err = wd.fails(&args, 2);
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: "), "{args:?}: {err}");
        assert!(first.contains(expected), "{args:?}: {err}");
    }
    let data: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--schema", "id BIGINT, id TEXT"],
            "--schema lists column 'id' twice",
        ),
        (vec!["--schema", "id BOGUS"], "--schema 'id BOGUS'"),
        (
            vec!["--schema", "cols.sql"],
            "--schema 'cols.sql': no such file",
        ),
        (
            vec!["--delimiter", "\""],
            "the delimiter and the quote are both '\"'",
        ),
        (
            vec!["--file-column", "id"],
            "the file column 'id' is already a column of the input",
        ),
        (
            vec!["--partition-by", "id,name"],
            "partition_by names every column",
        ),
        (
            vec!["--rejects-format", "csv"],
            "rejects format must be ndjson or parquet",
        ),
        (vec!["--sql", "SELEC"], "transform #1"),
    ];
    for (extra, expected) in data {
        let mut args = vec!["ingest", "a.csv", "--to", "o"];
        args.extend(extra);
        let err = wd.fails(&args, 1);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // Output paths that cannot work.
    for (to, mode, expected) in [
        ("notes.txt", "error", "output 'notes.txt' already exists"),
        ("a.csv/x", "error", "inside 'a.csv', which is a file"),
        ("a.csv", "overwrite", "holds the input 'a.csv'"),
        ("notes.txt", "append", "cannot append to the single file"),
    ] {
        let err = wd.fails(&["ingest", "a.csv", "--to", to, "--mode", mode], 1);
        assert_eq!(err.trim().lines().count(), 1, "{to}: {err}");
        assert!(err.contains(expected), "{to}: {err}");
    }
    assert_eq!(wd.read("notes.txt"), "hello\n", "untouched");
    // Pipeline files.
    for (name, text, expected) in [
        ("syntax.toml", "[source\n", "syntax.toml: line 1:"),
        (
            "empty.toml",
            "[source]\npaths = []\n[sink]\npath = \"o\"\n",
            "[source] paths is empty",
        ),
        (
            "mode.toml",
            "[source]\npaths = [\"a.csv\"]\n[sink]\npath = \"o\"\nmode = \"replace\"\n",
            "mode must be error, overwrite or append",
        ),
        (
            "onerr.toml",
            "[source]\npaths = [\"a.csv\"]\non_error = \"maybe\"\n[sink]\npath = \"o\"\n",
            "on-error must be fail, skip or reject",
        ),
        (
            "threads.toml",
            "[source]\npaths = [\"a.csv\"]\n[sink]\npath = \"o\"\n[settings]\nthreads = 0\n",
            "threads must be at least 1",
        ),
        (
            "type.toml",
            "[source]\npaths = 5\n[sink]\npath = \"o\"\n",
            "type.toml: line 2:",
        ),
    ] {
        wd.write(name, text);
        let err = wd.fails(&["run", name], 1);
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
    }
    assert!(!wd.path("o").exists());
}
