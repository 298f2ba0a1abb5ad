//! Differential tests: sluice and DuckDB read the same generated CSV, NDJSON and Parquet
//! files (seeded, with quotes, delimiters, line breaks, unicode and NULLs in the values) and
//! must agree on `count(*)`, `count(col)` and `sum()` of every column. The generator knows
//! how many records it wrote, so both are also checked against that number.

use crate::workdir::{python, Workdir};

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One generated row: id, amount, label (each may be NULL).
struct Row {
    id: Option<i64>,
    amount: Option<f64>,
    label: Option<String>,
}

const PIECES: &[&str] = &[
    "plain",
    "with,comma",
    "with \"quote\"",
    "line\nbreak",
    "Zürich",
    "日本語",
    "emoji 😀",
    "semi;colon",
    "tab\there",
    "  spaced  ",
    "x",
];

fn rows(rng: &mut Rng, n: usize) -> Vec<Row> {
    (0..n)
        .map(|_| Row {
            id: (rng.below(10) != 0).then(|| rng.below(2_000_000) as i64 - 1_000_000),
            amount: (rng.below(10) != 0).then(|| (rng.below(2_000_000) as f64) / 100.0 - 5000.0),
            label: (rng.below(10) != 0).then(|| {
                let a = PIECES[rng.below(PIECES.len() as u64) as usize];
                let b = PIECES[rng.below(PIECES.len() as u64) as usize];
                format!("{a}-{b}")
            }),
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn to_csv(rows: &[Row]) -> String {
    let mut out = String::from("id,amount,label\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{}\n",
            r.id.map(|v| v.to_string()).unwrap_or_default(),
            r.amount.map(|v| format!("{v:.2}")).unwrap_or_default(),
            r.label.as_deref().map(csv_field).unwrap_or_default()
        ));
    }
    out
}

fn to_ndjson(rows: &[Row]) -> String {
    rows.iter()
        .map(|r| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), serde_json::json!(r.id));
            if let Some(a) = r.amount {
                m.insert("amount".into(), serde_json::json!(a));
            }
            m.insert("label".into(), serde_json::json!(r.label));
            serde_json::Value::Object(m).to_string() + "\n"
        })
        .collect()
}

/// (count(*), count(id), sum(id), count(amount), sum(amount), count(label), sum(length(label)))
type Totals = (i64, i64, i64, i64, f64, i64, i64);

const SQL: &str = "SELECT count(*) AS n, count(id) AS n_id, coalesce(sum(id), 0) AS s_id, \
     count(amount) AS n_amount, coalesce(sum(amount), 0) AS s_amount, count(label) AS n_label, \
     coalesce(sum(character_length(label)), 0) AS s_label FROM t";

fn parse_totals(line: &str) -> Totals {
    let f: Vec<&str> = line.trim().split(',').collect();
    assert_eq!(f.len(), 7, "{line}");
    let i = |k: usize| f[k].parse::<i64>().unwrap_or_else(|_| panic!("{line}"));
    (
        i(0),
        i(1),
        i(2),
        i(3),
        f[4].parse::<f64>().unwrap_or_else(|_| panic!("{line}")),
        i(5),
        i(6),
    )
}

fn expected(rows: &[Row]) -> Totals {
    (
        rows.len() as i64,
        rows.iter().filter(|r| r.id.is_some()).count() as i64,
        rows.iter().filter_map(|r| r.id).sum(),
        rows.iter().filter(|r| r.amount.is_some()).count() as i64,
        rows.iter().filter_map(|r| r.amount).sum(),
        rows.iter().filter(|r| r.label.is_some()).count() as i64,
        rows.iter()
            .filter_map(|r| r.label.as_ref())
            .map(|l| l.chars().count() as i64)
            .sum(),
    )
}

fn assert_close(what: &str, a: Totals, b: Totals) {
    let close = (a.4 - b.4).abs() <= 1e-6 * a.4.abs().max(1.0);
    assert!(
        (a.0, a.1, a.2, a.3, a.5, a.6) == (b.0, b.1, b.2, b.3, b.5, b.6) && close,
        "{what}: {a:?} != {b:?}"
    );
}

#[test]
fn sluice_agrees_with_duckdb_on_generated_files() {
    for seed in [1u64, 7, 42, 1234] {
        let wd = Workdir::new();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut all = Vec::new();
        let files = 2 + rng.below(4) as usize;
        for f in 0..files {
            let n = 1 + rng.below(3000) as usize;
            let rs = rows(&mut rng, n);
            wd.write(&format!("csv/part {f} #%.csv"), to_csv(&rs));
            wd.write(&format!("json/part-{f}~é.ndjson"), to_ndjson(&rs));
            all.extend(rs);
        }
        let want = expected(&all);
        for (dir, reader) in [
            ("csv", "read_csv('{dir}/*.csv', header=true, union_by_name=true, columns={'id':'BIGINT','amount':'DOUBLE','label':'VARCHAR'})"),
            ("json", "read_json('{dir}/*.ndjson', format='newline_delimited', columns={'id':'BIGINT','amount':'DOUBLE','label':'VARCHAR'})"),
        ] {
            let got = wd.query(SQL, &[("t", &format!("{dir}/"))]);
            let ours = parse_totals(&got[1]);
            assert_close(&format!("seed {seed} {dir}: sluice vs generator"), ours, want);
            let root = wd.root().display().to_string();
            let table = reader.replace("{dir}", &format!("{root}/{dir}"));
            let sql = SQL.replace("FROM t", &format!("FROM {table}"));
            let duck = python(&format!(
                "import duckdb\nr = duckdb.sql(\"\"\"{sql}\"\"\").fetchall()[0]\nprint(','.join(str(v) for v in r))"
            ));
            let Some(duck) = duck else { continue };
            assert_close(
                &format!("seed {seed} {dir}: sluice vs DuckDB"),
                ours,
                parse_totals(&duck),
            );
        }
        // Parquet written by DuckDB (not by sluice), read by both.
        let root = wd.root().display().to_string();
        let made = python(&format!(
            "import duckdb\nduckdb.sql(\"COPY (SELECT * FROM read_csv('{root}/csv/*.csv', header=true, columns={{'id':'BIGINT','amount':'DOUBLE','label':'VARCHAR'}})) TO '{root}/all.parquet' (FORMAT parquet, ROW_GROUP_SIZE 1000)\")"
        ));
        if made.is_some() {
            let got = wd.query(SQL, &[("t", "all.parquet")]);
            assert_close(
                &format!("seed {seed} parquet: sluice vs generator"),
                parse_totals(&got[1]),
                want,
            );
        }
    }
}

/// A SQL join of many rows with a small file (the broadcast lookup written in SQL): the
/// small side is the hash table every partition probes (`CollectLeft`), whichever side of
/// the `JOIN` it is written on, so the big side is never repartitioned; and the answer is
/// the generator's and DuckDB's.
#[test]
fn a_join_with_a_small_file_builds_on_it_and_agrees_with_duckdb() {
    const CODES: [&str; 20] = [
        "DE", "FR", "US", "GB", "IT", "ES", "NL", "BE", "PL", "SE", "NO", "DK", "FI", "AT", "CH",
        "PT", "IE", "JP", "CA", "AU",
    ];
    let wd = Workdir::new();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    // Rows: a known country, one no lookup row has, or none; amounts in cents.
    let mut facts: Vec<(Option<String>, i64)> = Vec::new();
    for f in 0..4 {
        let mut text = String::from("id,country,amount\n");
        for i in 0..6000 {
            let country = match rng.below(25) {
                0 => None,
                1 => Some("ZZ".to_string()),
                k => Some(CODES[(k as usize) % CODES.len()].to_string()),
            };
            let cents = rng.below(1_000_000) as i64;
            let shown = country.clone().unwrap_or_default();
            text.push_str(&format!("{i},{shown},{}.{:02}\n", cents / 100, cents % 100));
            facts.push((country, cents));
        }
        wd.write(&format!("facts/part {f} #%~.csv"), text);
    }
    // 50 lookup rows: the 20 codes and 30 no row has, in 7 regions.
    let mut lookup = String::from("country,region\n");
    let mut region_of = std::collections::HashMap::new();
    for (k, code) in CODES
        .iter()
        .map(|c| c.to_string())
        .chain((0..30).map(|i| format!("X{i:02}")))
        .enumerate()
    {
        let region = format!("région {}", k % 7);
        lookup.push_str(&format!("{code},{region}\n"));
        region_of.insert(code, region);
    }
    wd.write("lookup é/countries.csv", lookup);
    // The generator's answer: rows and cents per region (inner join: unknown or empty
    // countries drop out).
    let mut want: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for (country, cents) in &facts {
        if let Some(region) = country.as_ref().and_then(|c| region_of.get(c)) {
            let e = want.entry(region.clone()).or_default();
            e.0 += 1;
            e.1 += cents;
        }
    }
    let tables = [("t", "facts/"), ("c", "lookup é/countries.csv")];
    for sql in [
        "SELECT c.region, count(*) AS n, round(sum(t.amount) * 100) AS cents FROM t JOIN c ON t.country = c.country GROUP BY c.region ORDER BY c.region",
        "SELECT c.region, count(*) AS n, round(sum(t.amount) * 100) AS cents FROM c JOIN t ON t.country = c.country GROUP BY c.region ORDER BY c.region",
    ] {
        let got: std::collections::BTreeMap<String, (i64, i64)> = wd.query(sql, &tables)[1..]
            .iter()
            .map(|line| {
                let f: Vec<&str> = line.split(',').collect();
                let num = |s: &str| s.parse::<f64>().unwrap_or_else(|_| panic!("{line}")) as i64;
                (f[0].to_string(), (num(f[1]), num(f[2])))
            })
            .collect();
        assert_eq!(got, want, "{sql}");
        // The plan: the 50-row file (one range) is the build side; the 4 files are probed
        // where they are read.
        let plan = wd.query(&format!("EXPLAIN {sql}"), &tables).join("\n");
        let join = plan
            .find("HashJoinExec")
            .unwrap_or_else(|| panic!("no hash join:\n{plan}"));
        let after = &plan[join..];
        assert!(after.contains("mode=CollectLeft"), "{plan}");
        let build = after.find("CsvScanExec").expect("a scan under the join");
        assert!(
            after[build..].starts_with("CsvScanExec: partitions=1, ranges=1,"),
            "the small file is not the build side:\n{plan}"
        );
        assert!(!after.contains("RepartitionExec: partitioning=Hash([country"), "{plan}");
        let root = wd.root().display().to_string();
        let duck_sql = sql
            .replace(
                "FROM t JOIN c",
                &format!("FROM read_csv('{root}/facts/*.csv') t JOIN read_csv('{root}/lookup é/countries.csv') c"),
            )
            .replace(
                "FROM c JOIN t",
                &format!("FROM read_csv('{root}/lookup é/countries.csv') c JOIN read_csv('{root}/facts/*.csv') t"),
            );
        let duck = python(&format!(
            "import duckdb\nfor r in duckdb.sql(\"\"\"{duck_sql}\"\"\").fetchall():\n    print(f'{{r[0]}},{{r[1]}},{{int(r[2])}}')"
        ));
        if let Some(duck) = duck {
            let duck: std::collections::BTreeMap<String, (i64, i64)> = duck
                .lines()
                .map(|line| {
                    let f: Vec<&str> = line.split(',').collect();
                    (
                        f[0].to_string(),
                        (f[1].parse().expect("a count"), f[2].parse().expect("cents")),
                    )
                })
                .collect();
            assert_eq!(duck, want, "DuckDB: {duck_sql}");
        }
    }
}
