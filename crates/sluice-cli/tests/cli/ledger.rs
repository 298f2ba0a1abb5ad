//! The row ledger against inputs whose record counts the test knows by construction:
//! `rows_in` is the number of records written, each file's count is checked, SQL that adds
//! rows (UNION ALL, joins) and removes them (WHERE, LIMIT) is counted per plan node, and a
//! file read twice by the SQL is counted (and its bad rows rejected) once.

use crate::rejects::assert_identity;
use crate::workdir::Workdir;

/// A CSV file of `n` records (header excluded) with quoted line breaks, CRLF, bare CR and LF
/// endings, blank lines and a comment-free body; every `bad_every`-th record has an `id` that
/// is no integer. Returns the text and the number of bad records.
fn generated_csv(n: usize, bad_every: usize) -> (String, usize) {
    let mut out = String::from("id,v,note\r\n");
    let mut bad = 0;
    for i in 0..n {
        let id = if bad_every > 0 && i % bad_every == bad_every - 1 {
            bad += 1;
            format!("x{i}")
        } else {
            i.to_string()
        };
        let note = match i % 5 {
            0 => "\"two\nlines\"".to_string(),
            1 => "\"a, \"\"quoted\"\" comma\"".to_string(),
            2 => String::new(),
            _ => format!("plain {i}"),
        };
        let end = match i % 4 {
            0 => "\r\n",
            1 => "\r",
            _ => "\n",
        };
        out.push_str(&format!("{id},{},{note}{end}", i % 37));
        if i % 11 == 0 {
            out.push('\n'); // a blank line: no record
        }
    }
    (out, bad)
}

fn run(wd: &Workdir, toml: &str) -> serde_json::Value {
    wd.write("jobs/p.toml", toml);
    let report = wd.path("r.json").display().to_string();
    wd.ok(&["run", "jobs/p.toml", "--report-json", &report, "-q"]);
    serde_json::from_str(&wd.read("r.json")).expect("report json")
}

fn pipeline(input: &str, sql: &str, out: &str) -> String {
    format!(
        r#"
[source]
paths = ["../{input}"]
schema = "id BIGINT, v BIGINT, note VARCHAR"

[[transform]]
sql = "{sql}"

[sink]
path = "../{out}"
format = "csv"
mode = "overwrite"

[settings]
threads = 2
"#
    )
}

fn rejects_lines(wd: &Workdir, out: &str) -> usize {
    wd.read(&format!("{out}/_rejects/rejects.ndjson"))
        .lines()
        .count()
}

#[test]
fn rows_in_is_the_number_of_records_the_generator_wrote() {
    let wd = Workdir::new();
    let (csv, bad) = generated_csv(20_000, 997);
    wd.write("data/x.csv", &csv);
    // NDJSON: blank and white-space lines are no records; a line with two objects and an
    // object spread over two lines are records the reader must reject, not merge or split.
    let mut ndjson = String::new();
    for i in 0..3000 {
        ndjson.push_str(&format!("{{\"id\": {i}, \"v\": 1, \"note\": \"n\"}}\n"));
        if i % 100 == 0 {
            ndjson.push_str("   \n\n");
        }
    }
    ndjson.push_str(
        "{\"id\": 1, \"v\": 1, \"note\": \"a\"} {\"id\": 2, \"v\": 2, \"note\": \"b\"}\n",
    );
    ndjson.push_str("{\"id\": 3,\n \"v\": 3, \"note\": \"c\"}\n");
    wd.write("data/y.ndjson", &ndjson);
    // Comment lines are no records, the last one without a line break too.
    wd.write(
        "data/z.csv",
        "id,v,note\n# a comment, \"odd\n1,2,a\n# the end",
    );
    let (ndjson_records, ndjson_bad) = (3000 + 1 + 2, 3);
    for split in ["1", "100000000"] {
        let report = wd.ingest(&[
            "data",
            "--to",
            "out",
            "--mode",
            "overwrite",
            "--schema",
            "id BIGINT, v BIGINT, note VARCHAR",
            "--split-min-size",
            split,
            "--threads",
            "3",
            "--comment",
            "#",
        ]);
        assert_identity(&report);
        assert_eq!(report["rows_in"], 20_000 + ndjson_records + 1, "{report}");
        assert_eq!(report["rows_rejected"], bad + ndjson_bad, "{report}");
        assert_eq!(report["rows_out"], 20_000 - bad + 3000 + 1, "{report}");
        let files = report["files"].as_array().expect("files");
        let file = |name: &str| {
            files
                .iter()
                .find(|f| f["file"].as_str().unwrap_or_default().ends_with(name))
                .unwrap_or_else(|| panic!("{name} in {report}"))
                .clone()
        };
        assert_eq!(file("x.csv")["rows_in"], 20_000);
        assert_eq!(file("x.csv")["rows_rejected"], bad);
        assert_eq!(file("y.ndjson")["rows_in"], ndjson_records);
        assert_eq!(rejects_lines(&wd, "out"), bad + ndjson_bad);
    }
}

#[test]
fn a_union_all_of_source_with_itself_reads_each_record_once() {
    let wd = Workdir::new();
    let (csv, bad) = generated_csv(1000, 100);
    wd.write("data/x.csv", &csv);
    let r = run(
        &wd,
        &pipeline(
            "data/x.csv",
            "SELECT * FROM source UNION ALL SELECT * FROM source",
            "out",
        ),
    );
    assert_identity(&r);
    assert_eq!(r["rows_in"], 1000, "{r}");
    assert_eq!(r["rows_out"], 2 * (1000 - bad), "{r}");
    assert_eq!(r["rows_added_by_sql"], 1000 - bad, "{r}");
    assert_eq!(r["rows_removed_by_sql"], 0, "{r}");
    // Each bad record is rejected once, though both scans met it.
    assert_eq!(r["rows_rejected"], bad, "{r}");
    assert_eq!(rejects_lines(&wd, "out"), bad);
}

#[test]
fn joins_filters_and_aggregates_are_counted_node_by_node() {
    let wd = Workdir::new();
    let (csv, bad) = generated_csv(3700, 0);
    assert_eq!(bad, 0);
    wd.write("data/x.csv", &csv);
    // ids are unique: the self-join keeps one row per id; v = i % 37, so v < 10 keeps 10 of
    // every 37 records.
    let kept = (0..3700).filter(|i| i % 37 < 10).count();
    let r = run(
        &wd,
        &pipeline(
            "data/x.csv",
            "SELECT a.id, b.v, a.note FROM source a JOIN source b ON a.id = b.id WHERE b.v < 10",
            "out",
        ),
    );
    assert_identity(&r);
    assert_eq!(r["rows_in"], 3700, "{r}");
    assert_eq!(r["rows_out"], kept, "{r}");
    // Aggregation: 37 groups out of 3700 rows.
    let r = run(
        &wd,
        &pipeline(
            "data/x.csv",
            "SELECT v, count(*) AS n FROM source GROUP BY v",
            "out2",
        ),
    );
    assert_identity(&r);
    assert_eq!(r["rows_in"], 3700, "{r}");
    assert_eq!(r["rows_out"], 37, "{r}");
    assert_eq!(r["rows_removed_by_sql"], 3700 - 37, "{r}");
}

#[test]
fn a_limit_counts_the_records_it_read() {
    let wd = Workdir::new();
    let (csv, _) = generated_csv(200_000, 0);
    wd.write("data/x.csv", &csv);
    let r = run(
        &wd,
        &pipeline("data/x.csv", "SELECT * FROM source LIMIT 5", "out"),
    );
    assert_identity(&r);
    assert_eq!(r["rows_out"], 5, "{r}");
    // The read stops early: what was read is counted, and all of it but 5 rows was removed.
    let read = r["rows_in"].as_u64().expect("rows_in");
    assert!((5..=200_000).contains(&read), "{r}");
    assert_eq!(r["rows_removed_by_sql"], read - 5, "{r}");
}

#[test]
fn columnar_inputs_hold_the_rows_their_footers_promise() {
    let wd = Workdir::new();
    let (csv, bad) = generated_csv(30_000, 1000);
    wd.write("data/x.csv", &csv);
    for format in ["parquet", "orc"] {
        let out = format!("as-{format}");
        if format == "orc" {
            // sluice writes no ORC: pyarrow converts the Parquet copy (CI has it).
            let Some(_) = crate::workdir::python(&format!(
                "import glob, os, pyarrow as pa, pyarrow.parquet as pq, pyarrow.orc as po\n\
                 t = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob('{src}/*.parquet'))])\n\
                 os.makedirs('{dst}', exist_ok=True)\n\
                 po.write_table(t, '{dst}/x.orc')\n",
                src = wd.path("as-parquet").display(),
                dst = wd.path(&out).display(),
            )) else {
                continue;
            };
        } else {
            wd.ingest(&[
                "data/x.csv",
                "--to",
                &out,
                "--schema",
                "id BIGINT, v BIGINT, note VARCHAR",
                "--files",
                "3",
            ]);
        }
        let toml = pipeline(
            &out,
            "SELECT * FROM source WHERE v >= 0",
            &format!("{out}-read"),
        )
        .replace("schema = \"id BIGINT, v BIGINT, note VARCHAR\"", "");
        let r = run(&wd, &toml);
        assert_identity(&r);
        assert_eq!(r["rows_in"], 30_000 - bad, "{format}: {r}");
        assert_eq!(r["rows_out"], 30_000 - bad, "{format}: {r}");
    }
}
