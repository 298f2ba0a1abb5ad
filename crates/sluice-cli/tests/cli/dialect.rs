//! CSV dialects detected per file: a generated corpus of every dialect the detection knows,
//! mixed in one job, read exactly — the generator knows each file's rows, ids and amounts,
//! and DuckDB reads sluice's Parquet back — plus files where detection must not switch.

use crate::workdir::{python, Workdir};

/// One generated file: its name, its bytes, and the rows it holds.
struct Gen {
    name: &'static str,
    text: String,
    rows: u64,
    ids: u64,
    cents: u64,
    /// Whether its columns are named (`id,name,amount`) or numbered (`column_1`...).
    named: bool,
    /// The dialect `sluice schema --json` must report: delimiter, quote, escape, comment,
    /// header, lines skipped.
    expect: (
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        bool,
        u64,
    ),
}

/// Rows of file `k`: ids `k * 1000 + i`, amounts `i * 0.25`, names with the characters
/// each dialect must keep inside a value.
fn corpus() -> Vec<Gen> {
    let rows = 300u64;
    let mut files = Vec::new();
    let mut make = |k: u64,
                    name: &'static str,
                    expect,
                    head: &str,
                    line: &dyn Fn(u64, u64, &str) -> String,
                    named: bool,
                    every: Option<(u64, &str)>| {
        let mut text = String::from(head);
        let (mut ids, mut cents) = (0, 0);
        for i in 0..rows {
            let id = k * 1000 + i;
            let amount = format!("{}.{:02}", i / 4, (i % 4) * 25);
            ids += id;
            cents += i * 25;
            text.push_str(&line(id, i, &amount));
            if let Some((n, extra)) = every {
                if i % n == n - 1 {
                    text.push_str(extra);
                }
            }
        }
        files.push(Gen {
            name,
            text,
            rows,
            ids,
            cents,
            named,
            expect,
        });
    };
    make(
        0,
        "comma.csv",
        (",", "\"", None, None, true, 0),
        "id,name,amount\n",
        &|id, i, a| format!("{id},\"Doe, J{i}\",{a}\n"),
        true,
        None,
    );
    make(
        1,
        "semicolon.csv",
        (";", "\"", None, None, true, 0),
        "id;name;amount\n",
        &|id, i, a| format!("{id};Doe, J{i};{a}\n"),
        true,
        None,
    );
    make(
        2,
        "tab_no_header.tsv",
        ("\t", "\"", None, None, false, 0),
        "",
        &|id, i, a| format!("{id}\tname {i}\t{a}\n"),
        false,
        None,
    );
    make(
        3,
        "pipe_titled.txt",
        ("|", "\"", None, None, true, 2),
        "Quarterly export\nGenerated 2024-01-01 by a system\nid|name|amount\n",
        &|id, i, a| format!("{id}|n{i}|{a}\n"),
        true,
        None,
    );
    make(
        4,
        "excel_sep.csv",
        (";", "\"", None, None, true, 1),
        "sep=;\r\nid;name;amount\r\n",
        &|id, i, a| format!("{id};\"x; {i}\";{a}\r\n"),
        true,
        None,
    );
    make(
        5,
        "single_quotes.csv",
        (",", "'", None, None, true, 0),
        "id,name,amount\n",
        &|id, i, a| format!("{id},'a, b {i}',{a}\n"),
        true,
        None,
    );
    make(
        6,
        "backslash.csv",
        (",", "\"", Some("\\"), None, true, 0),
        "id,name,amount\n",
        &|id, i, a| format!("{id},\"say \\\"hi, {i}\\\"\",{a}\n"),
        true,
        None,
    );
    make(
        7,
        "comments.csv",
        (",", "\"", None, Some("#"), true, 0),
        "id,name,amount\n",
        &|id, i, a| format!("{id},c{i},{a}\n"),
        true,
        Some((50, "# checkpoint: not a row\n")),
    );
    // A comma file whose quoted text is full of semicolons: it stays a comma file.
    make(
        8,
        "comma_with_semicolons.csv",
        (",", "\"", None, None, true, 0),
        "id,name,amount\n",
        &|id, i, a| format!("{id},\"a; b; c; {i}; d\",{a}\n"),
        true,
        None,
    );
    files
}

#[test]
fn every_dialect_in_one_job_reads_exactly() {
    let wd = Workdir::new();
    let files = corpus();
    for f in &files {
        wd.write(&format!("in/{}", f.name), &f.text);
    }
    let report = wd.ingest(&["in", "--to", "out", "--file-column", "src"]);
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    assert_eq!(report["rows_in"], rows, "{report}");
    assert_eq!(report["rows_out"], rows, "{report}");
    assert_eq!(report["rows_rejected"], 0, "{report}");
    assert_eq!(
        report["dialects"].as_array().map(Vec::len),
        Some(files.len()),
        "{report}"
    );
    // The schema command reports each file's dialect.
    let schema: serde_json::Value =
        serde_json::from_str(&wd.ok(&["schema", "in", "--json"])).expect("schema json");
    for f in &files {
        let entry = schema["files"]
            .as_array()
            .expect("files")
            .iter()
            .find(|e| e["file"].as_str().is_some_and(|p| p.ends_with(f.name)))
            .unwrap_or_else(|| panic!("{} in {schema}", f.name));
        let d = &entry["dialect"];
        let (delimiter, quote, escape, comment, header, skip) = f.expect;
        assert_eq!(d["delimiter"], delimiter, "{}: {d}", f.name);
        assert_eq!(d["quote"], quote, "{}: {d}", f.name);
        assert_eq!(d["escape"].as_str(), escape, "{}: {d}", f.name);
        assert_eq!(d["comment"].as_str(), comment, "{}: {d}", f.name);
        assert_eq!(d["header"], header, "{}: {d}", f.name);
        assert_eq!(d["skip_rows"], skip, "{}: {d}", f.name);
        assert_eq!(d["sure"], true, "{}: {d}", f.name);
    }
    // DuckDB reads the output: per file, the rows, the ids and the amounts the generator
    // wrote, and one name kept with its delimiter, quotes and escapes.
    let glob = format!("{}/**/*.parquet", wd.path("out").display());
    let Some(out) = python(&format!(
        r#"import duckdb
rows = duckdb.sql("""
  SELECT regexp_extract(src, '[^/]+$'), count(*),
         sum(coalesce(id, column_1))::BIGINT,
         round(sum(coalesce(amount, column_3)) * 100)::BIGINT,
         max(coalesce(name, column_2))
  FROM read_parquet('{glob}', union_by_name = true) GROUP BY 1 ORDER BY 1""").fetchall()
for r in rows:
    print('|'.join(str(v) for v in r))"#
    )) else {
        return;
    };
    let mut expected: Vec<String> = files
        .iter()
        .map(|f| {
            let name = match f.name {
                "comma.csv" | "semicolon.csv" => "Doe, J99".to_string(),
                "tab_no_header.tsv" => "name 99".to_string(),
                "pipe_titled.txt" => "n99".to_string(),
                "excel_sep.csv" => "x; 99".to_string(),
                "single_quotes.csv" => "a, b 99".to_string(),
                "backslash.csv" => "say \"hi, 99\"".to_string(),
                "comments.csv" => "c99".to_string(),
                // The largest as text: `9;` sorts after `99` (';' after '9').
                _ => "a; b; c; 9; d".to_string(),
            };
            format!("{}|{}|{}|{}|{name}", f.name, f.rows, f.ids, f.cents)
        })
        .collect();
    expected.sort();
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got, expected);
    assert!(files.iter().filter(|f| !f.named).count() == 1);
}

/// What the user gives wins: `--no-header` reads a header line as a row (of text), and
/// `--delimiter ,` keeps a `;` file one column wide.
#[test]
fn given_options_turn_detection_off_for_their_aspect() {
    let wd = Workdir::new();
    wd.write("a.csv", "id;v\n1;2\n3;4\n");
    let report = wd.ingest(&["a.csv", "--to", "out1", "--no-header"]);
    assert_eq!(report["rows_in"], 3, "{report}");
    let schema = wd.ok(&["schema", "a.csv", "--delimiter", ","]);
    assert!(schema.contains("id;v"), "{schema}");
    assert!(schema.contains("',' delimited, header"), "{schema}");
    // Detected, it is two columns with a header, and sure of it.
    let schema = wd.ok(&["schema", "a.csv"]);
    assert!(
        schema.contains("dialect: ';' delimited, header (sure)"),
        "{schema}"
    );
}

/// A file whose every column is text cannot tell a header from data: the first row is
/// the header, and the summary says it was a guess.
#[test]
fn an_all_text_file_is_a_guess_said_in_the_summary() {
    let wd = Workdir::new();
    wd.write("people.csv", "ann,oslo\nbob,rome\ncid,lima\n");
    let out = wd
        .sluice()
        .args(["ingest", "people.csv", "--to", "out"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("people.csv read as ',' delimited, header, a guess: every column is text"),
        "{summary}"
    );
}

/// Spreadsheet exports end rows with a delimiter; R writes row names under a header one
/// field short; a title line may hold the delimiter. Each reads with its true columns, in
/// one job, split into ranges; a value in the trailing field's place and a row short of a
/// column are rejected with their lines, never read as something else.
#[test]
fn rows_ending_with_a_delimiter_row_names_and_wide_titles_read_exactly() {
    let wd = Workdir::new();
    let rows = 3000u64;
    // ids 1..=rows; amounts i * 0.5.
    let mut trailing = String::from("id,name,amount\n");
    let mut rnames = String::from("\"id\";\"amount\"\n");
    let mut titled =
        String::from("Created as New Dataset,Sample 022, February 11 2017\nid,amount\n");
    let (mut ids, mut halves) = (0u64, 0u64);
    let (mut bad_lines, mut kept_short) = (Vec::new(), 0u64);
    for i in 1..=rows {
        let amount = format!("{}.{}", i / 2, (i % 2) * 5);
        match i {
            // A value where the blank field goes, and a row short of a column: rejected.
            2500 => {
                trailing.push_str(&format!("{i},n{i},{amount},oops\n"));
                bad_lines.push((i + 1, "too_many_fields"));
            }
            2600 => {
                trailing.push_str(&format!("{i},{amount}\n"));
                bad_lines.push((i + 1, "too_few_fields"));
            }
            // A row without the trailing delimiter is whole.
            2700 => {
                trailing.push_str(&format!("{i},n{i},{amount}\n"));
                kept_short += 1;
            }
            _ => trailing.push_str(&format!("{i},\"n, {i}\",{amount},\n")),
        }
        rnames.push_str(&format!("\"r{i}\";{i};{amount}\n"));
        titled.push_str(&format!("{i},{amount}\n"));
        ids += i;
        halves += i;
    }
    assert_eq!(kept_short, 1);
    wd.write("in/trailing.csv", &trailing);
    wd.write("in/rnames.csv", &rnames);
    wd.write("in/titled.csv", &titled);
    let schema: serde_json::Value =
        serde_json::from_str(&wd.ok(&["schema", "in", "--json"])).expect("schema json");
    let dialect = |name: &str| {
        schema["files"]
            .as_array()
            .expect("files")
            .iter()
            .find(|e| e["file"].as_str().is_some_and(|p| p.ends_with(name)))
            .unwrap_or_else(|| panic!("{name} in {schema}"))["dialect"]
            .clone()
    };
    let d = dialect("trailing.csv");
    assert_eq!(
        (d["columns"].as_u64(), d["trailing_delimiter"].as_bool()),
        (Some(3), Some(true)),
        "{d}"
    );
    let d = dialect("rnames.csv");
    assert_eq!(
        (
            d["delimiter"].as_str(),
            d["columns"].as_u64(),
            d["unnamed_first_column"].as_bool()
        ),
        (Some(";"), Some(3), Some(true)),
        "{d}"
    );
    let d = dialect("titled.csv");
    assert_eq!(
        (d["skip_rows"].as_u64(), d["header"].as_bool()),
        (Some(1), Some(true)),
        "{d}"
    );

    let report = wd.ingest(&[
        "in",
        "--to",
        "out",
        "--file-column",
        "src",
        "--split-min-size",
        "8192",
    ]);
    assert_eq!(report["rows_in"], 3 * rows, "{report}");
    assert_eq!(report["rows_rejected"], 2, "{report}");
    assert_eq!(report["rows_out"], 3 * rows - 2, "{report}");
    let rejects = wd.read("out/_rejects/rejects.ndjson");
    let mut got: Vec<(u64, String)> = rejects
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("reject json");
            assert!(
                v["file"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("trailing.csv")),
                "{v}"
            );
            (
                v["line"].as_u64().unwrap_or(0),
                v["kind"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(u64, String)> = bad_lines.iter().map(|(l, k)| (*l, k.to_string())).collect();
    assert_eq!(got, want);
    // DuckDB reads the output: per file its rows and sums, the row names in column_1.
    let glob = format!("{}/**/*.parquet", wd.path("out").display());
    let Some(out) = python(&format!(
        r#"import duckdb
for r in duckdb.sql("""
  SELECT regexp_extract(src, '[^/]+$'), count(*), sum(id)::BIGINT, round(sum(amount) * 2)::BIGINT,
         count(column_1), max(name)
  FROM read_parquet('{glob}', union_by_name = true) GROUP BY 1 ORDER BY 1""").fetchall():
    print('|'.join(str(v) for v in r))"#
    )) else {
        return;
    };
    let (bad_ids, bad_halves) = (2500 + 2600, 2500 + 2600);
    let expected = vec![
        format!("rnames.csv|{rows}|{ids}|{halves}|{rows}|None"),
        format!("titled.csv|{rows}|{ids}|{halves}|0|None"),
        format!(
            "trailing.csv|{}|{}|{}|0|n2700",
            rows - 2,
            ids - bad_ids,
            halves - bad_halves
        ),
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
}

/// A file without a header and a schema: its columns take the schema's names by position
/// (as in Spark and DuckDB), declared (`--no-header`) or detected; before, the file's
/// `column_1`... came out beside the schema's columns, which were all NULL.
#[test]
fn a_headerless_file_takes_the_schema_names_by_position() {
    let wd = Workdir::new();
    wd.write("d.txt", "1;2.5\n2;3.5\n");
    wd.write("n.csv", "7,x,0.5\n8,y,1.5\n9,z,2.5\n");
    let declared = wd.ok(&[
        "query",
        "SELECT id, v FROM t ORDER BY id",
        "-t",
        "t=d.txt",
        "--format-in",
        "csv",
        "--no-header",
        "--delimiter",
        ";",
        "--schema",
        "id BIGINT, v DOUBLE",
        "--output",
        "csv",
    ]);
    assert_eq!(declared, "id,v\n1,2.5\n2,3.5\n");
    // Detected headerless (numbers first), a schema naming every column.
    let detected = wd.ok(&[
        "query",
        "SELECT sum(id) AS ids, string_agg(name, '') AS names, sum(w) AS w FROM t",
        "-t",
        "t=n.csv",
        "--schema",
        "id BIGINT, name VARCHAR, w DOUBLE",
        "--output",
        "csv",
    ]);
    assert_eq!(detected, "ids,names,w\n24,xyz,4.5\n");
    // Declared headerless and wider than the schema: the first columns are named, the
    // rest keep their numbers, and the schema view says so.
    let wider = wd.ok(&[
        "query",
        "SELECT id, column_2, column_3 FROM t ORDER BY id",
        "-t",
        "t=n.csv",
        "--no-header",
        "--schema",
        "id BIGINT",
        "--output",
        "csv",
    ]);
    assert_eq!(wider, "id,column_2,column_3\n7,x,0.5\n8,y,1.5\n9,z,2.5\n");
    let schema = wd.ok(&["schema", "n.csv", "--no-header", "--schema", "id BIGINT"]);
    assert!(
        schema.contains("no header, 3 columns named by position from a schema of 1"),
        "{schema}"
    );
}
