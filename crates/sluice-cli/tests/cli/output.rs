//! Output layout: file counts, Hive partitions, modes, single files, the manifest.

use crate::workdir::{python, Workdir};

fn rows(n: usize) -> String {
    let mut s = String::from("id,country,year,amount\n");
    let countries = ["DE", "FR", "US", "GB", ""];
    for i in 0..n {
        s.push_str(&format!(
            "{i},{},{},{}.5\n",
            countries[i % 5],
            2020 + i % 3,
            i
        ));
    }
    s
}

#[test]
fn files_n_yields_n_files() {
    let wd = Workdir::new();
    wd.write("in.csv", rows(50_000));
    for n in [1usize, 3, 7] {
        let out = format!("out{n}");
        let report = wd.ingest(&["in.csv", "--to", &out, "--files", &n.to_string()]);
        assert_eq!(wd.data_files(&out).len(), n, "--files {n}");
        assert_eq!(report["files_written"], n as u64);
        assert_eq!(report["rows_out"], 50_000);
    }
    // Default for a folder: one file per thread.
    wd.ingest(&["in.csv", "--to", "dflt", "--threads", "2"]);
    assert_eq!(wd.data_files("dflt").len(), 2);
}

#[test]
fn partition_by_writes_hive_folders_with_the_right_rows() {
    let wd = Workdir::new();
    wd.write("in.csv", rows(1_000));
    let report = wd.ingest(&["in.csv", "--to", "out", "--partition-by", "country,year"]);
    assert_eq!(report["rows_out"], 1_000);
    let files = wd.data_files("out");
    // 5 countries (one empty -> default partition) x 3 years, one file per folder.
    assert_eq!(files.len(), 15, "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("country=DE/year=2020/")));
    assert!(files
        .iter()
        .any(|f| f.starts_with("country=__HIVE_DEFAULT_PARTITION__/year=2021/")));
}

#[test]
fn partition_folders_hold_the_right_rows() {
    let wd = Workdir::new();
    wd.write("in.csv", rows(1_000));
    wd.ingest(&["in.csv", "--to", "out", "--partition-by", "country"]);
    let out = wd.ok(&[
        "query",
        "SELECT count(*) AS bad FROM t WHERE src NOT LIKE concat('out/country=', coalesce(country, '__HIVE_DEFAULT_PARTITION__'), '/%')",
        "-t",
        "t=out",
        "--file-column",
        "src",
        "--output",
        "csv",
    ]);
    assert_eq!(out.trim(), "bad\n0");
    let per = wd.query(
        "SELECT country, count(*) AS n FROM t GROUP BY country ORDER BY country",
        &[("t", "out")],
    );
    assert_eq!(
        per,
        ["country,n", "DE,200", "FR,200", "GB,200", "US,200", ",200"]
    );
    // Partition columns are not repeated inside the files.
    let inner = wd.data_files("out")[0].clone();
    let schema: serde_json::Value =
        serde_json::from_str(&wd.ok(&["schema", &format!("out/{inner}"), "--json"])).expect("json");
    let cols: Vec<&str> = schema["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(cols, ["id", "year", "amount"]);
    if let Some(out) = python(&format!(
        "import pyarrow.dataset as ds\n\
         d = ds.dataset(r'{}', format='parquet', partitioning='hive')\n\
         print(d.count_rows(), sorted(set(d.to_table().column('country').to_pylist()), key=str))",
        wd.path("out").display()
    )) {
        assert!(out.starts_with("1000 "), "{out}");
        assert!(out.contains("'DE'") && out.contains("'US'"), "{out}");
    }
}

#[test]
fn modes_error_overwrite_append() {
    let wd = Workdir::new();
    wd.write("a.csv", "id\n1\n2\n");
    wd.write("b.csv", "id\n3\n");
    wd.ingest(&["a.csv", "--to", "out"]);
    let err = wd.fails(&["ingest", "b.csv", "--to", "out"], 1);
    assert!(err.contains("already exists"), "{err}");
    wd.ingest(&["b.csv", "--to", "out", "--mode", "append"]);
    let ids = wd.query("SELECT id FROM t ORDER BY id", &[("t", "out")]);
    assert_eq!(ids, ["id", "1", "2", "3"]);
    let manifest: serde_json::Value =
        serde_json::from_str(&wd.read("out/_SUCCESS")).expect("manifest");
    assert_eq!(manifest["rows"], 3);
    wd.ingest(&["b.csv", "--to", "out", "--mode", "overwrite"]);
    let ids = wd.query("SELECT id FROM t ORDER BY id", &[("t", "out")]);
    assert_eq!(ids, ["id", "3"]);
    // No staging folders are left behind, and the manifest matches the files.
    assert_eq!(wd.staging_leftovers(), Vec::<String>::new());
    let manifest = sluice::sink::read_manifest(&wd.path("out")).expect("manifest");
    assert_eq!(manifest.rows, 1);
    manifest
        .verify(&wd.path("out"))
        .expect("files match the manifest");
}

#[test]
fn append_keeps_old_files_and_lists_all_in_the_manifest() {
    let wd = Workdir::new();
    wd.write("a.csv", "id\n1\n2\n");
    wd.write("b.csv", "id\n3\n");
    wd.ingest(&["a.csv", "--to", "out", "--files", "1"]);
    let before = wd.data_files("out");
    let first = std::fs::read(wd.path(&format!("out/{}", before[0]))).expect("read");
    wd.ingest(&["b.csv", "--to", "out", "--mode", "append", "--files", "1"]);
    let after = wd.data_files("out");
    assert_eq!(after.len(), 2);
    assert!(after.contains(&before[0]), "old file kept under its name");
    let same = std::fs::read(wd.path(&format!("out/{}", before[0]))).expect("read");
    assert!(first == same, "old file untouched");
    let manifest = sluice::sink::read_manifest(&wd.path("out")).expect("manifest");
    assert_eq!(manifest.rows, 3);
    assert_eq!(manifest.files.len(), 2);
    manifest
        .verify(&wd.path("out"))
        .expect("files match the manifest");
}

#[test]
fn leftovers_of_a_crashed_job_are_cleaned_up() {
    let wd = Workdir::new();
    wd.write("a.csv", "id\n1\n");
    wd.ingest(&["a.csv", "--to", "out"]);
    // An unfinished staging folder, as a job killed mid-write leaves it.
    wd.write(
        ".sluice-staging-out-deadbeef0000/part-00000-deadbeef0000.parquet",
        "half a file",
    );
    wd.ingest(&["a.csv", "--to", "out", "--mode", "overwrite"]);
    assert!(!wd.path(".sluice-staging-out-deadbeef0000").exists());
    // A crash between the fallback commit's two renames: old output parked, new one staged.
    std::fs::rename(wd.path("out"), wd.path(".sluice-staging-out-feedface0000")).expect("mv");
    std::fs::create_dir_all(wd.path(".sluice-staging-out-feedface0000-old")).expect("mkdir");
    wd.write("b.csv", "id\n2\n");
    let err = wd.fails(&["ingest", "b.csv", "--to", "out"], 1);
    assert!(
        err.contains("already exists"),
        "the staged output was put in place first: {err}"
    );
    let ids = wd.query("SELECT id FROM t", &[("t", "out")]);
    assert_eq!(ids, ["id", "1"]);
    assert!(!wd.path(".sluice-staging-out-feedface0000-old").exists());
}

#[test]
fn single_file_outputs() {
    let wd = Workdir::new();
    wd.write("in.csv", rows(20_000));
    let report = wd.ingest(&["in.csv", "--to", "one.parquet", "--threads", "2"]);
    assert_eq!(report["files_written"], 1);
    assert!(wd.path("one.parquet").is_file());
    let n = wd.query("SELECT count(*) AS n FROM t", &[("t", "one.parquet")]);
    assert_eq!(n, ["n", "20000"]);
}

#[test]
fn a_single_file_output_keeps_the_input_row_order() {
    let wd = Workdir::new();
    let mut big = String::from("id,text\n");
    for i in 0..60_000 {
        big.push_str(&format!("{i},\"row, {i}\"\n"));
    }
    wd.write("in/a.csv", &big);
    wd.write("in/b.csv", "id,text\n60000,last\n");
    let report = wd.ingest(&[
        "in/a.csv",
        "in/b.csv",
        "--to",
        "one.csv",
        "--split-min-size",
        "65536",
        "--threads",
        "4",
    ]);
    assert!(
        report["input_partitions"].as_u64().unwrap_or(0) >= 4,
        "{report}"
    );
    let ids: Vec<u64> = wd
        .read("one.csv")
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("id")
        })
        .collect();
    assert_eq!(ids.len(), 60_001);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "row order changed");
}

#[test]
fn tiny_inputs_leave_no_empty_files_unless_asked_for() {
    let wd = Workdir::new();
    wd.write("a.csv", "id,v\n1,x\n");
    wd.ingest(&["a.csv", "--to", "out", "--threads", "4"]);
    assert_eq!(wd.data_files("out").len(), 1, "{:?}", wd.data_files("out"));
    // An explicit --files is honoured exactly, empty files included.
    wd.ingest(&["a.csv", "--to", "out3", "--threads", "4", "--files", "3"]);
    assert_eq!(wd.data_files("out3").len(), 3);
    let n = wd.query("SELECT count(*) AS n FROM t", &[("t", "out")]);
    assert_eq!(n, ["n", "1"]);
}

/// Columns whose values seldom repeat are written without a dictionary (building one only to
/// drop it costs CPU): floats, and columns nearly unique in the first batch (the ids); columns
/// of repeated values keep theirs, also one of 3,000 distinct codes; the values read back the
/// same.
#[test]
fn columns_of_unrepeated_values_are_written_without_a_dictionary() {
    let wd = Workdir::new();
    let mut csv = String::from("id,country,year,amount,code\n");
    let countries = ["DE", "FR", "US", "GB", ""];
    for i in 0..20_000u64 {
        let code = i.wrapping_mul(2_654_435_761) % 3000;
        csv.push_str(&format!(
            "{i},{},{},{i}.5,k{code}\n",
            countries[i as usize % 5],
            2020 + i % 3
        ));
    }
    wd.write("in.csv", csv);
    wd.ingest(&["in.csv", "--to", "out", "--files", "1"]);
    let files = wd.data_files("out");
    assert_eq!(files.len(), 1);
    let Some(out) = python(&format!(
        "import pyarrow.parquet as pq\n\
         f = pq.ParquetFile(r'{}')\n\
         names = f.schema_arrow.names\n\
         for i in range(f.metadata.num_columns):\n    \
             enc = f.metadata.row_group(0).column(i).encodings\n    \
             print(names[i], str(f.schema_arrow.field(i).type), any('DICTIONARY' in e for e in enc))\n\
         t = f.read()\n\
         print('sum', sum(t.column('amount').to_pylist()), t.num_rows)",
        wd.path("out").join(&files[0]).display()
    )) else {
        return;
    };
    let lines: Vec<&str> = out.lines().collect();
    for line in [
        "amount double False",
        "id int64 False",
        "country string True",
        "year int64 True",
        "code string True",
    ] {
        assert!(lines.contains(&line), "{line}: {out}");
    }
    // amount is i + 0.5 for i in 0..20000.
    let want = (0..20_000).map(|i| i as f64 + 0.5).sum::<f64>();
    assert_eq!(
        lines.last().copied(),
        Some(format!("sum {want:.1} 20000").as_str()),
        "{out}"
    );
}
