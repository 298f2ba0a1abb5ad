//! Every input format and compression reads; every output format round-trips with its types.

use std::io::Write;

use crate::workdir::{python, Workdir};

const CSV: &str = "id,name,amount,day,ts,ok\n1,\"a, b\",1.5,2024-01-02,2024-01-02 03:04:05,true\n2,c,2.25,2024-02-03,2024-02-03 04:05:06.5,false\n";
const EXPECTED: [&str; 3] = [
    "id,name,amount,day,ts,ok",
    "1,\"a, b\",1.5,2024-01-02,2024-01-02T03:04:05,true",
    "2,c,2.25,2024-02-03,2024-02-03T04:05:06.500,false",
];

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).expect("gz");
            e.finish().expect("gz")
        }
        "zst" => zstd::encode_all(data, 3).expect("zstd"),
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).expect("bz2");
            e.finish().expect("bz2")
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).expect("xz");
            e.finish().expect("xz")
        }
        other => panic!("unknown compression {other}"),
    }
}

fn check(wd: &Workdir, input: &str) {
    let out = format!("out-{}", input.replace(['/', '.'], "_"));
    wd.ingest(&[input, "--to", &out]);
    let rows = wd.query(
        "SELECT id, name, amount, day, ts, ok FROM t ORDER BY id",
        &[("t", &out)],
    );
    assert_eq!(rows, EXPECTED, "reading {input}");
}

#[test]
fn csv_with_every_compression() {
    let wd = Workdir::new();
    wd.write("plain.csv", CSV);
    check(&wd, "plain.csv");
    for kind in ["gz", "zst", "bz2", "xz"] {
        let name = format!("c.csv.{kind}");
        wd.write(&name, compress(kind, CSV.as_bytes()));
        check(&wd, &name);
    }
}

#[test]
fn csv_dialects() {
    let wd = Workdir::new();
    // BOM, CRLF, semicolons, a comment line, a custom null string, no trailing newline.
    wd.write(
        "d.csv",
        "\u{feff}id;name;amount;day;ts;ok\r\n# a comment\r\n1;a, b;1.5;2024-01-02;2024-01-02 03:04:05;true\r\n2;c;NA;2024-02-03;2024-02-03 04:05:06.5;false",
    );
    wd.ingest(&[
        "d.csv",
        "--to",
        "out",
        "--delimiter",
        ";",
        "--comment",
        "#",
        "--null-value",
        "NA",
    ]);
    let rows = wd.query(
        "SELECT id, name, amount FROM t ORDER BY id",
        &[("t", "out")],
    );
    assert_eq!(rows, ["id,name,amount", "1,\"a, b\",1.5", "2,c,"]);
    // Tab-separated by extension; escape character; no header.
    wd.write("t.tsv", "1\t\"x \\\" y\"\n2\tz\n");
    wd.ingest(&["t.tsv", "--to", "out2", "--no-header", "--escape", "\\"]);
    let rows = wd.query("SELECT * FROM t ORDER BY column_1", &[("t", "out2")]);
    assert_eq!(rows, ["column_1,column_2", "1,\"x \"\" y\"", "2,z"]);
}

#[test]
fn ndjson_plain_and_compressed() {
    let wd = Workdir::new();
    let json = "{\"id\":1,\"name\":\"a, b\",\"amount\":1.5,\"day\":\"2024-01-02\",\"ts\":\"2024-01-02 03:04:05\",\"ok\":true}\n{\"id\":2,\"name\":\"c\",\"amount\":2.25,\"day\":\"2024-02-03\",\"ts\":\"2024-02-03T04:05:06.5\",\"ok\":false}\n";
    wd.write("j.ndjson", json);
    check(&wd, "j.ndjson");
    wd.write("j.jsonl.gz", compress("gz", json.as_bytes()));
    check(&wd, "j.jsonl.gz");
    let rows = wd.query(
        "SELECT arrow_typeof(ts) t, arrow_typeof(day) d FROM t LIMIT 1",
        &[("t", "j.ndjson")],
    );
    assert_eq!(rows, ["t,d", "Timestamp(µs),Date32"]);
}

#[test]
fn parquet_round_trip_keeps_types_for_other_readers() {
    let wd = Workdir::new();
    wd.write("in.csv", CSV);
    wd.ingest(&["in.csv", "--to", "out.parquet"]);
    check(&wd, "out.parquet");
    let Some(out) = python(&format!(
        "import pyarrow.parquet as pq, duckdb\n\
         t = pq.read_table(r'{p}')\n\
         print(t.schema.field('ts').type, t.schema.field('day').type, t.schema.field('id').type)\n\
         print(duckdb.sql(\"SELECT any_value(typeof(ts)), any_value(typeof(day)), max(ts) FROM read_parquet('{p}')\").fetchall())",
        p = wd.path("out.parquet").display()
    )) else {
        return;
    };
    assert!(out.contains("timestamp[us] date32[day] int64"), "{out}");
    assert!(
        out.contains("'TIMESTAMP', 'DATE', datetime.datetime(2024, 2, 3, 4, 5, 6, 500000)"),
        "{out}"
    );
}

#[test]
fn csv_and_ndjson_outputs_round_trip() {
    let wd = Workdir::new();
    wd.write("in.csv", CSV);
    wd.ingest(&["in.csv", "--to", "o.csv"]);
    check(&wd, "o.csv");
    wd.ingest(&["in.csv", "--to", "o.ndjson"]);
    check(&wd, "o.ndjson");
    wd.ingest(&[
        "in.csv",
        "--to",
        "dir",
        "--format-out",
        "ndjson",
        "--files",
        "2",
    ]);
    assert_eq!(wd.data_files("dir").len(), 2);
    assert!(wd.data_files("dir").iter().all(|f| f.ends_with(".ndjson")));
    check(&wd, "dir");
}

#[test]
fn orc_input() {
    let wd = Workdir::new();
    let Some(_) = python(&format!(
        "import pyarrow as pa, pyarrow.orc as orc\n\
         t = pa.table({{'id': pa.array([1, 2], pa.int64()), 'name': ['x', 'y'], 'amount': [1.5, None]}})\n\
         orc.write_table(t, r'{}')",
        wd.path("in.orc").display()
    )) else {
        return;
    };
    wd.write("more.csv", "id,name,amount\n3,z,3.5\n");
    let report = wd.ingest(&["in.orc", "more.csv", "--to", "out"]);
    assert_eq!(report["rows_out"], 3);
    let rows = wd.query(
        "SELECT id, name, amount FROM t ORDER BY id",
        &[("t", "out")],
    );
    assert_eq!(rows, ["id,name,amount", "1,x,1.5", "2,y,", "3,z,3.5"]);
}

/// ORC files under Hive partition folders (`p=x/`): the partition column comes with their
/// rows (datafusion-orc's scan reads only the files' own columns; sluice appends it). This
/// failed before with "column 'p' at index 1 but input schema only has 1 columns".
#[test]
fn orc_files_in_partition_folders() {
    let wd = Workdir::new();
    let Some(_) = crate::workdir::orc_pair(&wd, "d/p=x/a.orc", "d/p=y/b.orc") else {
        return;
    };
    let sql = "SELECT p, count(*) AS n, sum(v) AS s FROM t GROUP BY p ORDER BY p";
    assert_eq!(
        wd.query(sql, &[("t", "d")]),
        ["p,n,s", "x,1000,249750.0", "y,500,500.0"]
    );
    // Only the partition column, only the file's, and both in another order.
    assert_eq!(
        wd.query("SELECT count(DISTINCT p) AS n FROM t", &[("t", "d")]),
        ["n", "2"]
    );
    assert_eq!(
        wd.query("SELECT p, id FROM t WHERE id = 7 ORDER BY p", &[("t", "d")]),
        ["p,id", "x,7", "y,7"]
    );
    let report = wd.ingest(&["d", "--to", "out"]);
    assert_eq!(report["rows_out"], 1500);
    assert_eq!(wd.query(sql, &[("t", "out")])[1], "x,1000,249750.0");
}
