//! `[[lookup]]`: broadcast lookups, each option and error, and stage order.

use crate::rejects::assert_identity;
use crate::workdir::Workdir;

fn setup() -> Workdir {
    let wd = Workdir::new();
    wd.write(
        "data.csv",
        "id,category,sub,amount\n1,books,a,10\n2,toys,b,5\n3,food,a,7\n4,books,b,1\n5,,a,2\n",
    );
    wd.write(
        "lk/cats.csv",
        "category,label,grp\nbooks,Books,media\ntoys,Toys,kids\n",
    );
    wd
}

/// Runs `sluice run` on a pipeline reading data.csv through `stages` into out.csv.
fn run(wd: &Workdir, stages: &str, sql: &str) -> (serde_json::Value, Vec<String>) {
    wd.write(
        "p.toml",
        format!(
            "[source]\npaths = \"data.csv\"\n{stages}\n[[transform]]\nsql = \"{sql}\"\n[sink]\npath = \"out.csv\"\nmode = \"overwrite\"\n"
        ),
    );
    wd.ok(&["run", "p.toml", "--report-json", "r.json", "--quiet"]);
    let report = serde_json::from_str(&wd.read("r.json")).expect("report");
    let lines = wd.read("out.csv").lines().map(str::to_string).collect();
    (report, lines)
}

fn fails(wd: &Workdir, stages: &str) -> String {
    wd.write(
        "p.toml",
        format!("[source]\npaths = \"data.csv\"\n{stages}\n[sink]\npath = \"o\"\n"),
    );
    let err = wd.fails(&["run", "p.toml"], 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!wd.path("o").exists());
    err
}

#[test]
fn left_lookup_brings_columns_with_a_prefix() {
    let wd = setup();
    let (report, lines) = run(
        &wd,
        "[[lookup]]\nname = \"cats\"\npaths = [\"lk/cats.csv\"]\non = \"category\"\ncolumns = [\"label\"]\nprefix = \"cat_\"\n",
        "SELECT id, cat_label FROM source ORDER BY id",
    );
    assert_eq!(
        lines,
        ["id,cat_label", "1,Books", "2,Toys", "3,", "4,Books", "5,"]
    );
    assert_identity(&report);
    let l = &report["lookups"][0];
    assert_eq!(l["rows"], 2);
    assert_eq!(l["matched"], 3);
    assert_eq!(l["missing"], 2);
    // Without `columns`, every non-key column comes.
    let (_, lines) = run(
        &wd,
        "[[lookup]]\nname = \"cats\"\npaths = \"lk/*.csv\"\non = \"category\"\n",
        "SELECT id, label, grp FROM source ORDER BY id LIMIT 1",
    );
    assert_eq!(lines, ["id,label,grp", "1,Books,media"]);
}

#[test]
fn the_lookup_is_read_once_not_per_partition() {
    let wd = Workdir::new();
    let mut data = String::from("id,category\n");
    for i in 0..200_000 {
        data.push_str(&format!("{i},c{}\n", i % 500));
    }
    wd.write("data.csv", data);
    let mut cats = String::from("category,label\n");
    for c in 0..500 {
        cats.push_str(&format!("c{c},label-{c}\n"));
    }
    wd.write("cats.csv", &cats);
    wd.write(
        "p.toml",
        "[source]\npaths = \"data.csv\"\nsplit_min_size = 65536\n[[lookup]]\nname = \"cats\"\npaths = \"cats.csv\"\non = \"category\"\n[sink]\npath = \"out\"\n[settings]\nthreads = 4\n",
    );
    wd.ok(&["run", "p.toml", "--report-json", "r.json", "--quiet"]);
    let report: serde_json::Value = serde_json::from_str(&wd.read("r.json")).expect("json");
    assert!(
        report["input_partitions"].as_u64().unwrap_or(0) >= 4,
        "{report}"
    );
    let l = &report["lookups"][0];
    assert_eq!(l["matched"], 200_000);
    // Every byte of the lookup file was fetched exactly once over the whole job.
    assert_eq!(l["bytes_read"], l["file_bytes"], "{l}");
    assert_eq!(l["file_bytes"], cats.len() as u64);
    let n = wd.query(
        "SELECT count(*) AS n FROM t WHERE label = concat('label-', substr(category, 2))",
        &[("t", "out")],
    );
    assert_eq!(n, ["n", "200000"]);
}

#[test]
fn keys_with_other_names_several_columns_and_other_types() {
    let wd = setup();
    wd.write(
        "lk/pairs.csv",
        "cat,subcat,score\nbooks,a,1.5\nbooks,b,2.5\ntoys,b,3.5\n",
    );
    let (_, lines) = run(
        &wd,
        "[[lookup]]\nname = \"p\"\npaths = \"lk/pairs.csv\"\non = [{ left = \"category\", right = \"cat\" }, { left = \"sub\", right = \"subcat\" }]\n",
        "SELECT id, score FROM source ORDER BY id",
    );
    assert_eq!(lines, ["id,score", "1,1.5", "2,3.5", "3,", "4,2.5", "5,"]);
    // A BIGINT key in the rows meets a text key in the lookup.
    wd.write(
        "lk/ids.ndjson",
        "{\"key\":\"1\",\"tag\":\"one\"}\n{\"key\":\"4\",\"tag\":\"four\"}\n",
    );
    let (_, lines) = run(
        &wd,
        "[[lookup]]\nname = \"t\"\npaths = \"lk/ids.ndjson\"\non = { left = \"id\", right = \"key\" }\n",
        "SELECT id, tag FROM source WHERE tag IS NOT NULL ORDER BY id",
    );
    assert_eq!(lines, ["id,tag", "1,one", "4,four"]);
}

#[test]
fn inner_reject_and_fail_for_rows_without_a_match() {
    let wd = setup();
    let lookup = "[[lookup]]\nname = \"cats\"\npaths = \"lk/cats.csv\"\non = \"category\"\n";
    let (report, lines) = run(
        &wd,
        &format!("{lookup}how = \"inner\"\n"),
        "SELECT id FROM source ORDER BY id",
    );
    assert_eq!(lines, ["id", "1", "2", "4"]);
    assert_eq!(
        report["rows_removed_by_sql"], 2,
        "inner drops count as filtered"
    );
    assert_identity(&report);

    wd.write(
        "p.toml",
        format!("[source]\npaths = \"data.csv\"\n{lookup}on_missing = \"reject\"\n[sink]\npath = \"out\"\nmode = \"overwrite\"\n"),
    );
    wd.ok(&["run", "p.toml", "--report-json", "r.json", "--quiet"]);
    let report: serde_json::Value = serde_json::from_str(&wd.read("r.json")).expect("json");
    assert_identity(&report);
    assert_eq!(report["rows_out"], 3);
    assert_eq!(report["rows_rejected"], 2);
    let rejects = wd.read("out/_rejects/rejects.ndjson");
    assert!(
        rejects.contains("no match for category='food' in lookup 'cats'"),
        "{rejects}"
    );
    assert!(
        rejects.contains("no match for category=NULL in lookup 'cats'"),
        "{rejects}"
    );
    assert!(rejects.contains("\"kind\":\"lookup_missing\""), "{rejects}");

    let err = fails(&wd, &format!("{lookup}on_missing = \"fail\"\n"));
    assert!(
        err.contains("lookup 'cats': no match for category='food'"),
        "{err}"
    );
    let err = fails(
        &wd,
        &format!("{lookup}how = \"inner\"\non_missing = \"reject\"\n"),
    );
    assert!(
        err.contains("on_missing applies to how = \"left\""),
        "{err}"
    );
}

#[test]
fn duplicate_keys_are_an_error_unless_first_or_last() {
    let wd = setup();
    wd.write(
        "lk/dups.csv",
        "category,label\nbooks,B1\ntoys,T\nbooks,B2\n",
    );
    let lookup = "[[lookup]]\nname = \"d\"\npaths = \"lk/dups.csv\"\non = \"category\"\n";
    let err = fails(&wd, lookup);
    assert!(
        err.contains("lookup 'd': the key category='books' appears more than once"),
        "{err}"
    );
    for (mode, want) in [("first", "B1"), ("last", "B2")] {
        let (_, lines) = run(
            &wd,
            &format!("{lookup}on_duplicate = \"{mode}\"\n"),
            "SELECT label FROM source WHERE id = 1",
        );
        assert_eq!(lines, ["label", want]);
    }
}

#[test]
fn mistakes_in_lookups_are_clear() {
    let wd = setup();
    let cases = [
        (
            "[[lookup]]\nname = \"c\"\npaths = \"lk/cats.csv\"\non = \"category\"\nmax_lookup_bytes = 10\n",
            "more than max_lookup_bytes (10): join it in a [[transform]] SQL step instead",
        ),
        (
            "[[lookup]]\nname = \"c\"\npaths = \"lk/cats.csv\"\non = \"nope\"\n",
            "lookup 'c': the lookup has no column 'nope'",
        ),
        (
            "[[lookup]]\nname = \"c\"\npaths = \"lk/cats.csv\"\non = { left = \"nope\", right = \"category\" }\n",
            "lookup 'c': the rows have no column 'nope'",
        ),
        (
            "[[lookup]]\nname = \"c\"\npaths = \"lk/cats.csv\"\non = \"category\"\ncolumns = [\"label\", \"id\"]\n",
            "lookup 'c': the lookup has no column 'id'",
        ),
        (
            "[[lookup]]\nname = \"c\"\npaths = \"lk/missing.csv\"\non = \"category\"\n",
            "lookup 'c': input not found: ",
        ),
        (
            "[[lookup]]\nname = \"c\"\npaths = \"lk/cats.csv\"\non = \"category\"\nhow = \"outer\"\n",
            "how must be left or inner",
        ),
        (
            "[[lookup]]\nname = \"c\"\npaths = \"data.csv\"\non = \"id\"\n",
            "the column 'category' is already in the rows: set a prefix or pick columns",
        ),
        (
            "[[lookup]]\nname = \"c\"\npaths = \"lk/cats.csv\"\non = \"category\"\n[[lookup]]\nname = \"c\"\npaths = \"lk/cats.csv\"\non = \"category\"\nprefix = \"x_\"\n",
            "two stages are named 'c'",
        ),
    ];
    for (stages, expected) in cases {
        let err = fails(&wd, stages);
        assert!(err.contains(expected), "{stages}\n{err}");
    }
}

#[test]
fn stages_run_in_file_order_and_can_name_earlier_ones() {
    let wd = setup();
    let stages = r#"
[[transform]]
name = "clean"
sql = "SELECT id, upper(category) AS cat, amount FROM source WHERE category IS NOT NULL"

[[lookup]]
name = "labels"
paths = "lk/upper.csv"
on = "cat"
"#;
    wd.write(
        "lk/upper.csv",
        "cat,label\nBOOKS,Books\nTOYS,Toys\nFOOD,Food\n",
    );
    let (report, lines) = run(
        &wd,
        stages,
        "SELECT l.id, l.label, c.amount FROM labels l JOIN clean c ON l.id = c.id ORDER BY l.id",
    );
    assert_eq!(
        lines,
        [
            "id,label,amount",
            "1,Books,10",
            "2,Toys,5",
            "3,Food,7",
            "4,Books,1"
        ]
    );
    assert_eq!(
        report["lookups"][0]["matched"].as_u64().map(|n| n >= 4),
        Some(true)
    );
}

// regression: the rows' key was cast to the lookup key's type leniently, so 1.7 matched the
// key 1 (truncated) and a key like `abc` was silently "missing".
#[test]
fn a_key_that_does_not_convert_unchanged_never_matches() {
    let wd = setup();
    wd.write("data.csv", "id,k\n1,1.0\n2,1.7\n3,2.0\n4,1e30\n");
    wd.write("lk/ids.csv", "k,label\n1,one\n2,two\n");
    let stage = "[[lookup]]\nname = \"ids\"\npaths = [\"lk/ids.csv\"]\non = \"k\"\nhow = \"left\"\non_missing = \"reject\"\n";
    let (report, lines) = run(&wd, stage, "SELECT id, label FROM source ORDER BY id");
    assert_eq!(lines, ["id,label", "1,one", "3,two"]);
    assert_identity(&report);
    let l = &report["lookups"][0];
    assert_eq!(
        (l["matched"].as_u64(), l["missing"].as_u64()),
        (Some(2), Some(2)),
        "{l}"
    );
    assert_eq!(l["unconvertible"], 2, "{l}");
    let rejects = wd.read("out.csv_rejects/rejects.ndjson");
    assert!(rejects.contains("k='1.7'"), "{rejects}");
    assert!(
        rejects.contains("no value of the lookup key's type"),
        "{rejects}"
    );
    // Text keys: what parses is the number it spells (as in SQL), the rest never matches.
    wd.write("data.csv", "id,k\n1,1\n2,01\n3,abc\n");
    let (report, lines) = run(&wd, stage, "SELECT id, label FROM source ORDER BY id");
    assert_eq!(lines, ["id,label", "1,one", "2,one"]);
    assert_eq!(report["lookups"][0]["unconvertible"], 1, "{report}");
    assert_eq!(report["rows_rejected"], 1, "{report}");
}

/// CSV text of `n` rows (`id,category,note`) with `eol` line ends, an empty line before
/// every 97th row and a quoted note holding the delimiter; every 13th row's category has
/// no match, and a row with a field too many comes before row `n - 10`. Returns the text and, per unmatched row,
/// (id, 1-based line, byte offset), as written, and the line of the bad row.
fn csv_with_misses(n: u64, eol: &str) -> (Vec<u8>, Vec<(u64, u64, u64)>, u64) {
    let mut text = format!("id,category,note{eol}").into_bytes();
    let (mut line, mut misses, mut bad) = (2u64, Vec::new(), 0);
    for id in 1..=n {
        if id == n - 10 {
            text.extend_from_slice(format!("x,books,note,extra{eol}").as_bytes());
            bad = line;
            line += 1;
        }
        if id % 97 == 0 {
            text.extend_from_slice(eol.as_bytes());
            line += 1;
        }
        let category = if id % 13 == 0 { "nomatch" } else { "books" };
        if id % 13 == 0 {
            misses.push((id, line, text.len() as u64));
        }
        text.extend_from_slice(format!("{id},{category},\"note, {id}\"{eol}").as_bytes());
        line += 1;
    }
    (text, misses, bad)
}

/// The rejects of `path`, each with the `id` in its raw text.
fn rejects_by_id(wd: &Workdir, path: &str) -> Vec<(u64, serde_json::Value)> {
    wd.read(path)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|r| r["kind"] != "too_many_fields")
        .map(|r| {
            let raw: serde_json::Value =
                serde_json::from_str(r["raw"].as_str().expect("raw")).expect("raw is a row");
            assert!(
                !r["raw"].as_str().unwrap_or_default().contains("__sluice"),
                "{r}"
            );
            let id = match &raw["id"] {
                serde_json::Value::String(s) => s.parse().expect("id"),
                v => v.as_u64().expect("id"),
            };
            (id, r)
        })
        .collect()
}

#[test]
fn rows_a_stage_rejects_carry_their_file_line_and_offset() {
    let wd = Workdir::new();
    wd.write("lk/cats.csv", "category,label\nbooks,Books\n");
    // A big CSV read in byte ranges (CRLF), and the same rows gzipped (read whole).
    let (plain, plain_misses, bad_line) = csv_with_misses(16000, "\r\n");
    let (zipped, zipped_misses, _) = csv_with_misses(700, "\n");
    wd.write("in/a b%#~ü.csv", &plain);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &zipped).expect("gz");
    wd.write("in/z.csv.gz", gz.finish().expect("gz"));
    let pipeline = |paths: &str, tail: &str| {
        format!(
            "[source]\npaths = \"{paths}\"\nsplit_min_size = 4096\n\
             [[lookup]]\nname = \"cats\"\npaths = \"lk/cats.csv\"\non = \"category\"\non_missing = \"reject\"\n\
             {tail}[sink]\npath = \"out.csv\"\nmode = \"overwrite\"\n"
        )
    };
    wd.write("p.toml", pipeline("in", ""));
    let plan = wd.ok(&["explain", "p.toml", "--threads", "4"]);
    assert!(
        plan.contains("ranges"),
        "the big file is read in ranges: {plan}"
    );
    wd.ok(&[
        "run",
        "p.toml",
        "--threads",
        "4",
        "--report-json",
        "r.json",
        "--quiet",
    ]);
    let report: serde_json::Value = serde_json::from_str(&wd.read("r.json")).expect("report");
    assert_identity(&report);
    let misses = plain_misses.len() + zipped_misses.len();
    assert_eq!(report["rows_rejected"], misses as u64 + 2);
    assert_eq!(report["rows_out"], 16700 - misses as u64);
    // The scan's own reject (a field too many, deep in a later range) has its line too.
    let bad: Vec<serde_json::Value> = wd
        .read("out.csv_rejects/rejects.ndjson")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .filter(|r: &serde_json::Value| {
            r["kind"] == "too_many_fields"
                && r["file"].as_str().unwrap_or_default().ends_with("ü.csv")
        })
        .collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0]["line"], bad_line, "{bad:?}");
    // The origin columns never reach the output.
    let out = wd.read("out.csv");
    assert_eq!(out.lines().next(), Some("id,category,note,label"));
    let rejects = rejects_by_id(&wd, "out.csv_rejects/rejects.ndjson");
    assert_eq!(rejects.len(), misses);
    let (mut plain_seen, mut zipped_seen) = (0, 0);
    for (file, expected, seen) in [
        ("a b%#~ü.csv", &plain_misses, &mut plain_seen),
        ("z.csv.gz", &zipped_misses, &mut zipped_seen),
    ] {
        for (id, line, offset) in expected {
            let r = rejects
                .iter()
                .find(|(i, r)| i == id && r["file"].as_str().unwrap_or_default().ends_with(file))
                .map(|(_, r)| r)
                .unwrap_or_else(|| panic!("no reject for row {id} of {file}: {rejects:?}"));
            assert_eq!(r["kind"], "lookup_missing");
            assert_eq!(r["line"], *line, "{file} row {id}: {r}");
            assert_eq!(r["byte_offset"], *offset, "{file} row {id}: {r}");
            *seen += 1;
        }
    }
    assert_eq!(
        (plain_seen, zipped_seen),
        (plain_misses.len(), zipped_misses.len())
    );

    // After a SQL step the origin is gone: `SELECT *` shows the rows' own columns.
    wd.write(
        "p.toml",
        pipeline("in", "[[transform]]\nsql = \"SELECT * FROM source\"\n"),
    );
    wd.ok(&["run", "p.toml", "--quiet"]);
    assert_eq!(
        wd.read("out.csv").lines().next(),
        Some("id,category,note,label")
    );
}

#[test]
fn rows_a_stage_rejects_carry_their_line_in_ndjson_and_row_in_parquet() {
    let wd = Workdir::new();
    wd.write("lk/cats.csv", "category,label\nbooks,Books\n");
    let mut ndjson = String::new();
    let mut expected = Vec::new();
    let mut line = 1;
    for id in 1..=300u64 {
        if id % 50 == 0 {
            ndjson.push_str("  \n");
            line += 1;
        }
        let category = if id % 7 == 0 { "nomatch" } else { "books" };
        if id % 7 == 0 {
            expected.push((id, line, ndjson.len() as u64));
        }
        ndjson.push_str(&format!("{{\"id\":{id},\"category\":\"{category}\"}}\n"));
        line += 1;
    }
    wd.write("in/日本語 x.ndjson", &ndjson);
    let mut csv = String::from("id,category\n");
    for id in 1001..=1200u64 {
        let category = if id % 9 == 0 { "nomatch" } else { "books" };
        csv.push_str(&format!("{id},{category}\n"));
    }
    let src = "pq.src.csv";
    wd.write(src, &csv);
    wd.ok(&["ingest", src, "--to", "in/p.parquet", "--quiet"]);
    std::fs::remove_file(wd.path(src)).expect("rm");
    wd.write(
        "p.toml",
        "[source]\npaths = \"in\"\n[[lookup]]\nname = \"cats\"\npaths = \"lk/cats.csv\"\non = \"category\"\non_missing = \"reject\"\n[sink]\npath = \"out\"\nformat = \"parquet\"\n",
    );
    wd.ok(&["run", "p.toml", "--report-json", "r.json", "--quiet"]);
    let report: serde_json::Value = serde_json::from_str(&wd.read("r.json")).expect("report");
    assert_identity(&report);
    let rejects: std::collections::BTreeMap<u64, serde_json::Value> =
        rejects_by_id(&wd, "out/_rejects/rejects.ndjson")
            .into_iter()
            .collect();
    let parquet_misses: Vec<u64> = (1001..=1200).filter(|id| id % 9 == 0).collect();
    assert_eq!(rejects.len(), expected.len() + parquet_misses.len());
    for (id, line, offset) in expected {
        let r = &rejects[&id];
        assert!(
            r["file"]
                .as_str()
                .unwrap_or_default()
                .ends_with("日本語 x.ndjson"),
            "{r}"
        );
        assert_eq!(
            (&r["line"], &r["byte_offset"]),
            (&line.into(), &offset.into()),
            "{r}"
        );
    }
    for id in parquet_misses {
        let r = &rejects[&id];
        assert!(
            r["file"]
                .as_str()
                .unwrap_or_default()
                .ends_with("p.parquet"),
            "{r}"
        );
        // The row number in the file (the ingest kept the rows' order).
        assert_eq!(r["line"], id - 1000, "{r}");
    }
}
