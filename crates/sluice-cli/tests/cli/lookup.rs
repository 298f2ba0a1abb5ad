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
