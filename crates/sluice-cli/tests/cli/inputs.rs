//! Lists, folders, globs and recursion resolve to the union of their files, once each.

use crate::workdir::Workdir;

fn setup() -> Workdir {
    let wd = Workdir::new();
    wd.write("data/2024-01/a.csv", "id,v\n1,a\n2,b\n");
    wd.write("data/2024-02/b.csv", "id,v\n3,c\n");
    wd.write("data/2024-02/deep/er/c.csv", "id,v\n4,d\n5,e\n");
    wd.write("data/2023-12/old.csv", "id,v\n6,f\n");
    // Spark-style hidden files are skipped inside folders.
    wd.write("data/2024-01/_SUCCESS", "");
    wd.write("data/2024-01/.a.csv.crc", "junk");
    wd.write("data/_temporary/x.csv", "id,v\n99,zz\n");
    wd.write("extra/one.csv", "id,v\n7,g\n");
    wd.write("more/x.csv", "id,v\n8,h\n");
    wd.write("more/notes.txt.md", "not data");
    wd
}

fn ids(wd: &Workdir, out: &str) -> Vec<String> {
    wd.query("SELECT id FROM t ORDER BY id", &[("t", out)])[1..].to_vec()
}

#[test]
fn list_folder_and_glob_union_without_duplicates() {
    let wd = setup();
    let report = wd.ingest(&[
        "data/2024-*/*.csv",
        "extra/one.csv",
        "more/",
        // Named twice: through the glob above and explicitly.
        "data/2024-01/a.csv",
        "--to",
        "out",
    ]);
    assert_eq!(report["files_read"], 4, "{report}");
    assert_eq!(report["rows_in"], 5);
    assert_eq!(report["rows_out"], 5);
    assert_eq!(ids(&wd, "out"), ["1", "2", "3", "7", "8"]);
    // more/notes.txt.md has no known format and is skipped, and said so.
    assert_eq!(report["skipped_files"].as_array().map(Vec::len), Some(1));
}

#[test]
fn folders_are_recursive_and_skip_hidden_files() {
    let wd = setup();
    let report = wd.ingest(&["data", "--to", "out"]);
    assert_eq!(report["files_read"], 4, "{report}");
    assert_eq!(ids(&wd, "out"), ["1", "2", "3", "4", "5", "6"]);
}

#[test]
fn double_star_glob_matches_any_depth() {
    let wd = setup();
    let report = wd.ingest(&["data/**/*.csv", "--to", "out"]);
    assert_eq!(report["files_read"], 4, "{report}");
    assert_eq!(ids(&wd, "out"), ["1", "2", "3", "4", "5", "6"]);
    // `*` does not cross folders.
    let report = wd.ingest(&["data/*/*.csv", "--to", "out2"]);
    assert_eq!(report["files_read"], 3, "{report}");
    // `?` and `[..]`
    let report = wd.ingest(&["data/2024-0[2]/?.csv", "--to", "out3"]);
    assert_eq!(report["files_read"], 1, "{report}");
}

#[test]
fn file_column_names_each_rows_source() {
    let wd = setup();
    wd.ingest(&[
        "data/2024-01/a.csv",
        "extra/",
        "--to",
        "out",
        "--file-column",
        "src",
    ]);
    let rows = wd.query("SELECT id, src FROM t ORDER BY id", &[("t", "out")]);
    assert_eq!(
        rows,
        [
            "id,src",
            "1,data/2024-01/a.csv",
            "2,data/2024-01/a.csv",
            "7,extra/one.csv"
        ]
    );
}

#[test]
fn hive_folders_become_columns_when_read_back() {
    let wd = Workdir::new();
    wd.write(
        "in/a.csv",
        "id,country,year\n1,DE,2024\n2,FR,2023\n3,DE,2023\n4,,2024\n",
    );
    wd.ingest(&["in", "--to", "out", "--partition-by", "country,year"]);
    let rows = wd.query(
        "SELECT id, country, year, arrow_typeof(year) t FROM o ORDER BY id",
        &[("o", "out")],
    );
    assert_eq!(
        rows,
        [
            "id,country,year,t",
            "1,DE,2024,Int64",
            "2,FR,2023,Int64",
            "3,DE,2023,Int64",
            "4,,2024,Int64"
        ]
    );
    let rows = wd.ok(&[
        "query",
        "SELECT count(*) AS n FROM o",
        "-t",
        "o=out",
        "--hive-partitioning",
        "false",
        "--output",
        "csv",
    ]);
    assert_eq!(rows.trim(), "n\n4");
}
