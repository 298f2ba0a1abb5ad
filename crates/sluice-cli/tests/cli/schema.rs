//! Union by name, widening, and conflicts.

use crate::workdir::Workdir;

#[test]
fn union_by_name_aligns_columns_in_any_order() {
    let wd = Workdir::new();
    wd.write("in/a.csv", "id,name,value\n1,x,1.5\n");
    // Same columns in another order, plus one more: by position this would misalign.
    wd.write("in/b.csv", "id,extra,name,value\n2,e,y,2.5\n");
    wd.write("in/c.csv", "value,id\n3.5,3\n");
    let report = wd.ingest(&[
        "in",
        "--to",
        "out.csv",
        "--sql",
        "SELECT * FROM source ORDER BY id",
    ]);
    assert_eq!(report["rows_out"], 3);
    assert_eq!(
        wd.read("out.csv"),
        "id,name,value,extra\n1,x,1.5,\n2,y,2.5,e\n3,,3.5,\n"
    );
}

#[test]
fn widening_follows_int_double_string_and_is_reported() {
    let wd = Workdir::new();
    wd.write("in/a.csv", "k,n,s\n1,1,10\n");
    wd.write("in/b.csv", "k,n,s\n2,2.5,ten\n");
    let report = wd.ingest(&["in", "--to", "out"]);
    let decisions = report["schema_decisions"].to_string();
    assert!(
        decisions.contains("column 'n': BIGINT in in/a.csv, DOUBLE in in/b.csv -> DOUBLE"),
        "{decisions}"
    );
    assert!(
        decisions.contains("column 's': BIGINT in in/a.csv, VARCHAR in in/b.csv -> VARCHAR"),
        "{decisions}"
    );
    let rows = wd.query(
        "SELECT k, n, s, arrow_typeof(n) tn, arrow_typeof(s) ts FROM t ORDER BY k",
        &[("t", "out")],
    );
    assert_eq!(
        rows,
        [
            "k,n,s,tn,ts",
            "1,1.0,10,Float64,Utf8",
            "2,2.5,ten,Float64,Utf8"
        ]
    );
}

#[test]
fn schema_command_prints_merge_and_differences() {
    let wd = Workdir::new();
    wd.write("in/a.csv", "id,name\n1,x\n");
    wd.write("in/b.csv", "name,id,score\ny,2.5,7\n");
    let out = wd.ok(&["schema", "in"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(lines.contains(&vec!["id", "DOUBLE"]), "{out}");
    assert!(lines.contains(&vec!["score", "BIGINT"]), "{out}");
    assert!(
        out.contains("widened column 'id': BIGINT in in/a.csv, DOUBLE in in/b.csv -> DOUBLE"),
        "{out}"
    );
    assert!(
        out.contains(
            "in/a.csv: 'id' is BIGINT here (read as DOUBLE); missing 'score' (read as NULL)"
        ),
        "{out}"
    );
    assert!(out.contains("in/b.csv: matches"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&wd.ok(&["schema", "in", "--json"])).expect("json");
    assert_eq!(json["columns"][0]["type"], "DOUBLE");
}

#[test]
fn incompatible_types_in_typed_files_name_both_files() {
    let wd = Workdir::new();
    wd.write("a.csv", "flag\ntrue\n");
    wd.write("b.csv", "flag\n5\n");
    wd.ingest(&["a.csv", "--to", "p/a.parquet"]);
    wd.ingest(&["b.csv", "--to", "p/b.parquet"]);
    let err = wd.fails(&["ingest", "p", "--to", "out"], 1);
    assert!(
        err.contains("p/a.parquet") && err.contains("p/b.parquet"),
        "{err}"
    );
    assert!(
        err.contains("'flag'") && err.contains("BOOLEAN") && err.contains("BIGINT"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn union_by_position_when_asked() {
    let wd = Workdir::new();
    wd.write("in/a.csv", "id,name\n1,x\n");
    wd.write("in/b.csv", "key,label\n2,y\n");
    wd.ingest(&[
        "in",
        "--to",
        "out.csv",
        "--union-by-name",
        "false",
        "--sql",
        "SELECT * FROM source ORDER BY id",
    ]);
    assert_eq!(wd.read("out.csv"), "id,name\n1,x\n2,y\n");
    wd.write("in/c.csv", "one\n3\n");
    let err = wd.fails(
        &["ingest", "in", "--to", "o2", "--union-by-name", "false"],
        1,
    );
    assert!(err.contains("in/c.csv"), "{err}");
}

#[test]
fn explicit_schema_sets_types() {
    let wd = Workdir::new();
    wd.write("in/a.csv", "id,code,ts\n1,007,2024-01-01 10:00:00\n");
    wd.write("schema.sql", "code VARCHAR, id INT");
    wd.ingest(&["in", "--to", "out", "--schema", "code VARCHAR, id INT"]);
    let rows = wd.query(
        "SELECT id, code, arrow_typeof(id) t, arrow_typeof(ts) tt FROM t",
        &[("t", "out")],
    );
    assert_eq!(rows, ["id,code,t,tt", "1,007,Int32,Timestamp(µs)"]);
    wd.ingest(&["in", "--to", "out2", "--schema", "schema.sql"]);
    let rows = wd.query("SELECT code FROM t", &[("t", "out2")]);
    assert_eq!(rows, ["code", "007"]);
    let err = wd.fails(
        &["ingest", "in", "--to", "o3", "--schema", "id NOTATYPE"],
        1,
    );
    assert!(err.contains("--schema"), "{err}");
}

#[test]
fn ndjson_types_widen_across_files() {
    let wd = Workdir::new();
    wd.write("in/a.ndjson", "{\"x\": 1, \"y\": 1}\n");
    wd.write("in/b.ndjson", "{\"x\": \"a\", \"y\": 2.5}\n");
    wd.write(
        "in/c.ndjson",
        "{\"x\": true, \"y\": null, \"z\": {\"k\": 1}}\n",
    );
    let rows = wd.query(
        "SELECT x, y, arrow_typeof(x) tx, arrow_typeof(y) ty FROM t ORDER BY x",
        &[("t", "in")],
    );
    assert_eq!(
        rows,
        [
            "x,y,tx,ty",
            "1,1.0,Utf8,Float64",
            "a,2.5,Utf8,Float64",
            "true,,Utf8,Float64"
        ]
    );
}

// regression: UBIGINT met BIGINT as BIGINT, so a value above 2^63 stopped the job with an
// overflow, and a DECIMAL met an integer as DOUBLE, losing digits.
#[test]
fn exact_numbers_stay_exact_when_files_disagree() {
    let wd = Workdir::new();
    let Some(_) = crate::workdir::python(&format!(
        "import pyarrow as pa, pyarrow.parquet as pq, decimal\n\
         pq.write_table(pa.table({{'n': pa.array([18446744073709551615, 5], pa.uint64()), 'd': pa.array([decimal.Decimal('12345678901234567.89')], pa.decimal128(19, 2)).take([0, 0])}}), '{dir}/a.parquet')\n\
         pq.write_table(pa.table({{'n': pa.array([-1], pa.int64()), 'd': pa.array([7], pa.int64())}}), '{dir}/b.parquet')\n",
        dir = wd.root().display()
    )) else {
        return;
    };
    let out = wd.ok(&["schema", "a.parquet", "b.parquet"]);
    assert!(out.contains("DECIMAL(20,0)"), "{out}");
    let rows = wd.query(
        "SELECT CAST(n AS VARCHAR) AS n, CAST(d AS VARCHAR) AS d FROM t ORDER BY 1",
        &[("t", "*.parquet")],
    );
    assert_eq!(
        rows,
        [
            "n,d",
            "-1,7.00",
            "18446744073709551615,12345678901234567.89",
            "5,12345678901234567.89"
        ],
        "{out}"
    );
}

/// A literal quote inside a value (`5" screen`: csv-core and the reader take it as text)
/// neither cuts the schema sample nor rejects the row; the sampler's own cut is pinned by
/// `source::infer::tests` (it used to toggle "inside quotes" at every quote, which on files
/// bigger than the sample limit let only the rows before such a value decide the types).
#[test]
fn a_literal_quote_in_a_value_does_not_cut_the_schema_sample() {
    let wd = Workdir::new();
    let mut csv = String::from("id,desc,price\n1,plain,10\n2,5\" screen,20\n3,plain,30\n");
    for i in 4..=1000 {
        csv.push_str(&format!("{i},item {i},{i}.5\n"));
    }
    wd.write("in.csv", csv);
    let report = wd.ingest(&["in.csv", "--to", "out"]);
    assert_eq!(report["rows_in"], 1000, "{report:#}");
    assert_eq!(report["rows_rejected"], 0, "{report:#}");
    assert_eq!(report["rows_out"], 1000, "{report:#}");
    let rows = wd.query(
        "SELECT desc, arrow_typeof(price) t FROM t WHERE id = 2",
        &[("t", "out")],
    );
    assert_eq!(rows, ["desc,t", "\"5\"\" screen\",Float64"]);
}
