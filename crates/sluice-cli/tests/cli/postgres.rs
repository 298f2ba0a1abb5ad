//! PostgreSQL sources: a real server (Debian's package) on 127.0.0.1, started by `.ci/run`
//! through `.ci/pg.sh`, whose URL is `SLUICE_PG_URL`; each test works in a schema of its
//! own. `.ci/run` sets `SLUICE_REQUIRE_PG=1`, so there a missing server fails the tests;
//! elsewhere they skip with a note (start one with `bash .ci/pg.sh start DIR`).
//!
//! The expected values come from the server itself (its own aggregates over the rows the
//! tests generate there), and the output is read back by DuckDB, not by sluice.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::workdir::{python, Workdir};

/// The password `.ci/pg.sh` gives the test user: it must never show.
const PASSWORD: &str = "sluice-pw";

/// The test server, and a schema of the test's own.
struct Pg {
    url: String,
    schema: String,
}

fn pg() -> Option<Pg> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let Some(url) = std::env::var("SLUICE_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_PG").is_none(),
            "SLUICE_PG_URL is not set: a PostgreSQL server is required here (bash .ci/pg.sh start DIR)"
        );
        eprintln!("skipping: no PostgreSQL server (SLUICE_PG_URL); bash .ci/pg.sh start DIR");
        return None;
    };
    let pg = Pg {
        url,
        schema: format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ),
    };
    pg.sql(&format!(
        "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
        pg.schema
    ));
    Some(pg)
}

impl Pg {
    /// Runs `sql` (in the test's schema) with psql: its output, unaligned.
    fn sql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .arg(&self.url)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("SET search_path TO {},public; {sql}", self.schema))
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql failed: {}\n{sql}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `name` in the test's schema.
    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    /// The URL naming its sessions `application_name` = the test's schema (so a test
    /// watches and ends only its own sessions: the tests run at once).
    fn url_named(&self) -> String {
        format!("{}?application_name={}", self.url, self.schema)
    }

    /// The URL with another password.
    fn url_with_password(&self, password: &str) -> String {
        self.url.replace(PASSWORD, password)
    }
}

/// `sluice ingest` of the test's table `table` cut into `partitions` by `column`, into
/// `out`, with `extra` flags: the report.
fn read_table(
    wd: &Workdir,
    pg: &Pg,
    table: &str,
    (column, partitions): (&str, &str),
    out: &str,
    extra: &[&str],
) -> serde_json::Value {
    let table = pg.table(table);
    let mut args = vec![
        pg.url.as_str(),
        "--table",
        &table,
        "--partition-column",
        column,
        "--partitions",
        partitions,
        "--to",
        out,
    ];
    args.extend_from_slice(extra);
    wd.ingest(&args)
}

/// DuckDB's answer to `sql` over the Parquet files of `dir` (as `t`), one row as text.
fn duck(wd: &Workdir, dir: &str, sql: &str) -> Option<String> {
    let glob = format!("{}/**/*.parquet", wd.path(dir).display());
    let sql = sql.replace("FROM t", &format!("FROM read_parquet('{glob}')"));
    python(&format!(
        "import duckdb\nr = duckdb.sql(\"\"\"{sql}\"\"\").fetchall()[0]\nprint('|'.join(str(v) for v in r))"
    ))
    .map(|s| s.trim().to_string())
}

/// Every type the issue lists, 20,000 generated rows and one of NULLs, read in three
/// partitions: DuckDB's aggregates over sluice's Parquet equal the server's own.
#[test]
fn every_type_reads_as_the_server_holds_it() {
    let Some(pg) = pg() else { return };
    pg.sql(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TABLE t (id bigint, i int, s smallint, amt numeric(12,2), free numeric,
           x double precision, r real, ok boolean, label text, vc varchar(12), c char(3),
           b bytea, d date, tm time, ts timestamp, tz timestamptz, iv interval, u uuid,
           j json, jb jsonb, m mood, tags text[], nums int[]);
         INSERT INTO t SELECT g, g % 1000, (g % 300)::smallint, g * 1.25, g / 8.0, g / 4.0,
           g / 2.0, g % 3 = 0, 'l' || g, 'v' || (g % 50), 'c' || (g % 10), '\\x00ff'::bytea,
           date '2024-01-01' + g % 400, time '00:00' + g * interval '1 second',
           timestamp '2024-01-01' + g * interval '1 minute',
           timestamptz '2024-01-01 00:00+00' + g * interval '1 minute', g * interval '1 hour',
           md5(g::text)::uuid, json_build_object('k', g), jsonb_build_object('k', g),
           (ARRAY['sad','ok','happy'])[1 + g % 3]::mood, ARRAY['a', 'b' || g],
           ARRAY[g, NULL, -g] FROM generate_series(1, 20000) g;
         INSERT INTO t (id) VALUES (NULL);",
    );
    let wd = Workdir::new();
    // `schema` shows each column's Arrow type and the server's.
    let shown = wd.ok(&["schema", &pg.url, "--table", &pg.table("t")]);
    assert!(
        shown.contains("amt    DECIMAL(12,2)")
            && shown.contains("(20001 rows):")
            && shown.contains("  amt: numeric")
            && shown.contains("  m: mood"),
        "{shown}"
    );
    assert!(!shown.contains(PASSWORD));
    let report = read_table(&wd, &pg, "t", ("id", "3"), "out", &[]);
    assert_eq!(report["rows_in"], 20001, "{report}");
    assert_eq!(report["rows_out"], 20001);
    assert_eq!(report["rows_rejected"], 0);
    assert!(!report.to_string().contains(PASSWORD));
    let server = pg.sql(
        "SELECT count(*), count(id), sum(id), sum(i), sum(s), sum(amt), sum(free), sum(x), \
         count(*) FILTER (WHERE ok), sum(length(label)), count(DISTINCT vc), \
         count(DISTINCT c), sum(length(b)), max(d), count(DISTINCT tm), \
         to_char(max(ts), 'YYYY-MM-DD HH24:MI:SS'), to_char(max(tz) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), \
         count(DISTINCT u), sum(cardinality(tags)), sum(nums[1]), \
         count(*) FILTER (WHERE m = 'happy') FROM t",
    );
    let Some(ours) = duck(
        &wd,
        "out",
        "SELECT count(*), count(id), sum(id), sum(i), sum(s), sum(amt), sum(free), sum(x), \
         count(*) FILTER (WHERE ok), sum(length(label)), count(DISTINCT vc), \
         count(DISTINCT c), sum(octet_length(b)), max(d), count(DISTINCT tm), \
         strftime(max(ts), '%Y-%m-%d %H:%M:%S'), strftime(max(tz) AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S'), \
         count(DISTINCT u), sum(len(tags)), sum(nums[1]), \
         count(*) FILTER (WHERE m = 'happy') FROM t",
    ) else {
        return;
    };
    // sum(free): the server sums g/8.0 exactly; sluice keeps ten decimals of each, which
    // holds g/8 exactly too.
    let normalize = |s: &str| {
        s.split('|')
            .map(|v| {
                v.parse::<f64>()
                    .map(|f| format!("{f:.4}"))
                    .unwrap_or_else(|_| v.to_string())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        normalize(&ours),
        normalize(&server),
        "DuckDB over sluice's output vs the server"
    );
    // The types as Parquet holds them.
    let types = duck(
        &wd,
        "out",
        "SELECT string_agg(column_type, ',' ORDER BY column_name) FROM (DESCRIBE SELECT * FROM t)",
    )
    .unwrap_or_default();
    for t in [
        "DECIMAL(12,2)",
        "DECIMAL(38,10)",
        "TIMESTAMP WITH TIME ZONE",
        "BLOB",
        "VARCHAR[]",
        "INTEGER[]",
        "DATE",
        "TIME",
        "SMALLINT",
        "FLOAT",
        "BOOLEAN",
    ] {
        assert!(types.contains(t), "{t} in {types}");
    }
    // JSON, intervals and UUIDs as text.
    let text = duck(&wd, "out", "SELECT j, jb, iv, u FROM t WHERE id = 2").unwrap_or_default();
    assert_eq!(
        text,
        format!(
            "{{\"k\" : 2}}|{{\"k\": 2}}|PT2H|{}",
            pg.sql("SELECT md5('2')::uuid")
        )
    );
}

/// Rows below the lower bound, above the upper bound and with a NULL partition value are
/// all read, each once (Spark's JDBC source drops none either, but reads the outside rows
/// in its first and last partitions only by accident of its SQL); partitions by date and by
/// timestamp too.
#[test]
fn partitions_read_every_row_once_whatever_the_bounds() {
    let Some(pg) = pg() else { return };
    pg.sql(
        "CREATE TABLE t (id int, d date, tz timestamptz);
         INSERT INTO t SELECT g, date '2020-01-01' + g, timestamptz '2020-01-01 00:00+00' + g * interval '7 hours'
           FROM generate_series(-50, 150) g;
         INSERT INTO t SELECT NULL, NULL, NULL FROM generate_series(1, 5);",
    );
    let expected = pg.sql("SELECT count(*), coalesce(sum(id), 0) FROM t");
    assert_eq!(expected, "206|10050");
    let wd = Workdir::new();
    for (i, (column, lo, hi, n)) in [
        ("id", "0", "100", "4"),
        ("id", "140", "10", "7"),
        ("d", "2020-02-01", "2020-03-01", "5"),
        (
            "tz",
            "2020-01-03 00:00:00+00",
            "2020-01-20 12:00:00+00",
            "3",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let out = format!("out{i}");
        let bounds = ["--lower-bound", lo, "--upper-bound", hi];
        let report = read_table(&wd, &pg, "t", (column, n), &out, &bounds);
        assert_eq!(report["rows_in"], 206, "{column}: {report}");
        let Some(ours) = duck(&wd, &out, "SELECT count(*), coalesce(sum(id), 0) FROM t") else {
            continue;
        };
        assert_eq!(ours, expected, "{column} {lo}..{hi} in {n}");
    }
}

/// All partitions read one snapshot: while the read runs, another session moves money
/// between accounts at both ends of the table in transactions of two updates each. Every
/// consistent moment has the same total; partitions read at their own moments (as Spark's
/// JDBC source and ConnectorX do) would see a transfer half done.
#[test]
fn partitions_read_one_snapshot_while_the_table_changes() {
    let Some(pg) = pg() else { return };
    let accounts = 200_000;
    pg.sql(&format!(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint, note text);
         INSERT INTO accounts SELECT g, 1000, repeat('x', 40) FROM generate_series(1, {accounts}) g;"
    ));
    let total = pg.sql("SELECT sum(balance) FROM accounts");
    // Transfers between the first and the last accounts (different partitions), committed
    // one by one, until the test stops them. Killing psql does not stop its server process
    // (a DO loop never writes to the client, so it never sees it gone): the test ends it by
    // its application name, and the statement timeout ends it should the test die first.
    let writer_name = format!("sluice-test-writer-{}", pg.schema);
    let mut writer = Command::new("psql")
        .arg(&pg.url)
        .env("PGAPPNAME", &writer_name)
        .args(["-X", "-q", "-c"])
        .arg(format!(
            "SET search_path TO {}; SET statement_timeout = '300s'",
            pg.schema
        ))
        // A separate command: COMMIT inside DO needs to be outside any transaction block.
        .arg("-c")
        .arg(format!(
            "DO $$ BEGIN FOR i IN 1..100000000 LOOP \
             UPDATE accounts SET balance = balance - 1 WHERE id = 1 + (i % 1000); \
             UPDATE accounts SET balance = balance + 1 WHERE id = {accounts} - (i % 1000); \
             COMMIT; END LOOP; END $$;"
        ))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql writer");
    // The writer has committed transfers before the read starts.
    let started = std::time::Instant::now();
    while pg.sql("SELECT sum(balance) FILTER (WHERE id <= 1000) FROM accounts") == "1000000" {
        assert!(
            started.elapsed().as_secs() < 30,
            "the writer made no transfer"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let wd = Workdir::new();
    let mut seen = Vec::new();
    for i in 0..3 {
        let out = format!("out{i}");
        let report = read_table(&wd, &pg, "accounts", ("id", "4"), &out, &[]);
        assert_eq!(report["rows_in"], accounts);
        if let Some(sum) = duck(&wd, &out, "SELECT sum(balance), count(*) FROM t") {
            seen.push(sum);
        }
    }
    let _ = writer.kill();
    let _ = writer.wait();
    let ended = pg.sql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = '{writer_name}'"
    ));
    assert_eq!(ended, "1", "the writer's server process was not found");
    for s in &seen {
        assert_eq!(
            s,
            &format!("{total}|{accounts}"),
            "a read saw a transfer half done"
        );
    }
}

/// Each fault is one line naming the read (never the password), exit code 1, and nothing
/// written.
#[test]
fn faults_are_one_line_without_the_password() {
    let Some(pg) = pg() else { return };
    pg.sql(
        "CREATE TABLE t (id int, name text, p point);
         INSERT INTO t SELECT g, 'n' || g, point(g, g) FROM generate_series(1, 20000) g;",
    );
    let wd = Workdir::new();
    let table = pg.table("t");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let down = format!("postgres://sluice:{PASSWORD}@127.0.0.1:{closed}/sluice");
    let wrong = pg.url_with_password("not-the-password");
    let missing = pg.table("nope");
    let (q_name, q_id, q_div) = (
        format!("SELECT id, name FROM {table}"),
        format!("SELECT id FROM {table}"),
        format!("SELECT id, 1 / (id - 15000) AS x FROM {table}"),
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![&wrong, "--table", &table],
            "password authentication failed",
        ),
        (vec![&pg.url, "--table", &missing], "does not exist"),
        (vec![&down, "--table", &table], "Connection refused"),
        (
            vec![&pg.url, "--table", &table],
            "column 'p' is point, which sluice cannot read",
        ),
        (
            vec![
                &pg.url,
                "--query",
                "SELECT id, name FROM t0",
                "--partition-column",
                "id",
            ],
            "does not exist",
        ),
        (
            vec![&pg.url, "--query", &q_name, "--partition-column", "name"],
            "partition column 'name' is text: it must be an integer, date or timestamp column",
        ),
        (
            vec![&pg.url, "--query", &q_id, "--partition-column", "nope"],
            "partition column 'nope' is not a column (columns: id)",
        ),
        // An error the server meets half-way through the rows.
        (vec![&pg.url, "--query", &q_div], "division by zero"),
    ];
    for (i, (args, expected)) in cases.into_iter().enumerate() {
        let out = format!("out{i}");
        let mut all = vec!["ingest"];
        all.extend(args.iter().copied());
        all.extend(["--to", &out]);
        let err = wd.fails(&all, 1);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected '{expected}' in {err}"
        );
        assert!(
            !err.contains(PASSWORD) && !err.contains("not-the-password"),
            "{err}"
        );
        assert!(!wd.path(&out).exists(), "nothing written for {args:?}");
    }
    assert!(wd.staging_leftovers().is_empty());
}

/// A connection that the server drops half-way through a partition's rows fails the job in
/// one line, and nothing is committed.
#[test]
fn a_connection_dropped_mid_read_commits_nothing() {
    let Some(pg) = pg() else { return };
    pg.sql(
        "CREATE TABLE big (id int, pad text);
         INSERT INTO big SELECT g, repeat('y', 200) FROM generate_series(1, 400000) g;",
    );
    let wd = Workdir::new();
    let child = wd
        .sluice()
        .args([
            "ingest",
            &pg.url_named(),
            "--table",
            &pg.table("big"),
            "--partition-column",
            "id",
            "--partitions",
            "2",
            "--to",
            "out",
            "--threads",
            "1",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sluice");
    // Kill the first COPY the server is running for sluice.
    let started = std::time::Instant::now();
    loop {
        let killed = pg.sql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{}' AND query LIKE 'COPY%' AND pid <> pg_backend_pid()",
            pg.schema
        ));
        if killed != "0" {
            break;
        }
        assert!(started.elapsed().as_secs() < 60, "no COPY seen");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&pg.table("big")), "{err}");
    assert!(!wd.path("out").exists(), "nothing committed");
    assert!(wd.staging_leftovers().is_empty());
}

/// A pipeline reads a table with the `[source]` keys, the password from `${env:NAME}` or
/// from `PGPASSWORD`; values Arrow cannot hold (NaN, infinity) are rejected rows naming
/// their column, counted in the ledger; the password is in no output.
#[test]
fn a_pipeline_reads_a_table_and_rejects_values_arrow_cannot_hold() {
    let Some(pg) = pg() else { return };
    pg.sql(
        "CREATE TABLE m (id int, v numeric(10, 2), at timestamp);
         INSERT INTO m SELECT g, g, timestamp '2024-01-01' + g * interval '1 day' FROM generate_series(1, 1000) g;
         UPDATE m SET v = 'NaN' WHERE id = 10;
         UPDATE m SET at = 'infinity' WHERE id = 20;",
    );
    let wd = Workdir::new();
    let no_password = pg.url.replace(&format!(":{PASSWORD}@"), "@");
    for (i, (url, env)) in [
        (
            pg.url.replace(PASSWORD, "${env:SLUICE_TEST_PG_SECRET}"),
            ("SLUICE_TEST_PG_SECRET", PASSWORD),
        ),
        (
            no_password.replace("postgres://", "postgresql://"),
            ("PGPASSWORD", PASSWORD),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        wd.write(
            &format!("p{i}.toml"),
            format!(
                "[source]\npaths = [\"{url}\"]\ntable = \"{}\"\npartition_column = \"id\"\npartitions = 3\nlower_bound = 1\nupper_bound = 1000\n\n[sink]\npath = \"out{i}\"\n",
                pg.table("m")
            ),
        );
        // `explain` shows the partitions and their ranges, and no password.
        let explain = wd
            .sluice()
            .env(env.0, env.1)
            .args(["explain", &format!("p{i}.toml")])
            .output()
            .expect("explain");
        let shown = String::from_utf8_lossy(&explain.stdout);
        assert!(explain.status.success(), "{shown}");
        assert!(
            shown.contains("(1000 rows in its snapshot) -> 3 partitions")
                && shown.contains("\"id\" < 335 OR \"id\" IS NULL")
                && shown.contains("\"id\" >= 669"),
            "{shown}"
        );
        assert!(!shown.contains(PASSWORD), "{shown}");
        let report = wd.path(&format!("r{i}.json"));

        let out = wd
            .sluice()
            .env(env.0, env.1)
            .args(["run", &format!("p{i}.toml"), "--report-json"])
            .arg(&report)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
        let text = std::fs::read_to_string(&report).expect("report");
        assert!(!text.contains(PASSWORD));
        let r: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(r["rows_in"], 1000, "{r}");
        assert_eq!(r["rows_out"], 998);
        assert_eq!(r["rows_rejected"], 2);
        let rejects = walk_text(&wd.path(&format!("out{i}/_rejects")));
        assert!(
            rejects.contains("column 'v': the numeric is NaN"),
            "{rejects}"
        );
        assert!(
            rejects.contains("column 'at': the timestamp is infinity"),
            "{rejects}"
        );
        assert!(!rejects.contains(PASSWORD));
    }
}

/// Every file's text below `dir`.
fn walk_text(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            text.push_str(&walk_text(&e.path()));
        } else {
            text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    text
}

/// A `[[lookup]]` reads a dimension table from the database (broadcast): the rows get its
/// columns; a key it lacks is a rejected row.
#[test]
fn a_lookup_reads_a_dimension_table() {
    let Some(pg) = pg() else { return };
    pg.sql(
        "CREATE TABLE cats (category text PRIMARY KEY, dept text);
         INSERT INTO cats SELECT 'c' || g, 'd' || (g % 3) FROM generate_series(0, 9) g;",
    );
    let wd = Workdir::new();
    // 300 rows over categories c0..c10; c10 is not in the table.
    let mut csv = String::from("id,category\n");
    let mut per_dept = std::collections::BTreeMap::new();
    for i in 0..300 {
        let c = i % 11;
        csv.push_str(&format!("{i},c{c}\n"));
        if c < 10 {
            *per_dept.entry(format!("d{}", c % 3)).or_insert(0u64) += 1;
        }
    }
    wd.write("in/rows.csv", csv);
    wd.write(
        "p.toml",
        format!(
            "[source]\npaths = [\"in\"]\n\n[[lookup]]\nname = \"cats\"\npaths = [\"{}\"]\ntable = \"{}\"\non = \"category\"\non_missing = \"reject\"\n\n[sink]\npath = \"out\"\n",
            pg.url,
            pg.table("cats")
        ),
    );
    let report = wd.path("r.json");
    wd.ok(&[
        "run",
        "p.toml",
        "--quiet",
        "--report-json",
        &report.display().to_string(),
    ]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    let missing = 300 - per_dept.values().sum::<u64>();
    assert_eq!(r["rows_rejected"], missing, "{r}");
    let Some(ours) = duck(
        &wd,
        "out",
        "SELECT string_agg(dept || '=' || n, ',' ORDER BY dept) FROM (SELECT dept, count(*) AS n FROM t GROUP BY dept)",
    ) else {
        return;
    };
    let expected: Vec<String> = per_dept.iter().map(|(d, n)| format!("{d}={n}")).collect();
    assert_eq!(ours, expected.join(","));
}

/// CSV rows the generator writes for the load tests: `id,amount,label,at`, ids from
/// `first`; the sum of the amounts in cents.
fn load_input(wd: &Workdir, path: &str, first: i64, rows: i64, cents_per_id: i64) -> i64 {
    let mut csv = String::from("id,amount,label,at\n");
    let mut cents = 0;
    for id in first..first + rows {
        let c = id * cents_per_id;
        cents += c;
        csv.push_str(&format!(
            "{id},{}.{:02},\"l, {id} é\",2024-01-01T00:00:{:02}Z\n",
            c / 100,
            c % 100,
            id % 60
        ));
    }
    wd.write(path, csv);
    cents
}

/// A table is created from the rows' schema and loaded; `error` refuses an existing table,
/// `append` adds, `overwrite` replaces and `upsert` inserts or updates by key — each
/// checked by the server's own count and sum against the generator's.
#[test]
fn loads_create_append_overwrite_and_upsert() {
    let Some(pg) = pg() else { return };
    let wd = Workdir::new();
    let cents = load_input(&wd, "a/rows.csv", 1, 5000, 3);
    let table = pg.table("loaded");
    let load = |input: &str, extra: &[&str]| {
        let mut args = vec![input, "--to", &pg.url, "--table", &table];
        args.extend_from_slice(extra);
        wd.ingest(&args)
    };
    let report = load("a", &[]);
    assert_eq!(report["rows_out"], 5000, "{report}");
    assert!(!report.to_string().contains(PASSWORD));
    let state = || {
        pg.sql("SELECT count(*), (sum(amount) * 100)::bigint, count(DISTINCT label) FROM loaded")
    };
    assert_eq!(state(), format!("5000|{cents}|5000"));
    assert_eq!(
        pg.sql("SELECT label, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM loaded WHERE id = 61"),
        "l, 61 é|2024-01-01 00:00:01"
    );
    // `error` (the default): the table exists.
    let err = wd.fails(&["ingest", "a", "--to", &pg.url, "--table", &table], 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("the table already exists"), "{err}");
    assert!(!err.contains(PASSWORD));
    assert_eq!(state(), format!("5000|{cents}|5000"));
    load("a", &["--mode", "append"]);
    assert_eq!(state(), format!("10000|{}|5000", 2 * cents));
    load("a", &["--mode", "overwrite"]);
    assert_eq!(state(), format!("5000|{cents}|5000"));
    // Upsert by id into a table with that key: ids 4001..6000 at 5 cents per id.
    let keyed = pg.table("keyed");
    wd.ok(&[
        "ingest",
        "a",
        "--to",
        &pg.url,
        "--to-table",
        &keyed,
        "--upsert",
        "id",
        "--quiet",
    ]);
    let more = load_input(&wd, "b/rows.csv", 4001, 2000, 5);
    wd.ok(&[
        "ingest",
        "b",
        "--to",
        &pg.url,
        "--to-table",
        &keyed,
        "--upsert",
        "id",
        "--mode",
        "append",
        "--quiet",
    ]);
    let kept: i64 = (1..=4000).map(|id| id * 3).sum();
    assert_eq!(
        pg.sql("SELECT count(*), (sum(amount) * 100)::bigint FROM keyed"),
        format!("6000|{}", kept + more)
    );
}

/// A load that fails — a value the column cannot take at the end of the rows, a
/// constraint the server enforces, a schema that does not fit, a process killed mid-load —
/// leaves the table as it was: the rows appear all at once or not at all.
#[test]
fn a_failed_or_killed_load_leaves_the_table_as_it_was() {
    let Some(pg) = pg() else { return };
    let wd = Workdir::new();
    pg.sql(
        "CREATE TABLE small (id smallint, amount numeric(12,2), label text, at timestamptz);
         CREATE TABLE checked (id bigint, amount numeric(12,2) CHECK (amount < 40), label text, at timestamptz);
         CREATE TABLE typed (id uuid, amount numeric, label text, at timestamptz);",
    );
    // 40,000 ids: the last ones do not fit a smallint.
    load_input(&wd, "in/rows.csv", 1, 40_000, 1);
    let url = pg.url.as_str();
    for (table, expected) in [
        ("small", "column 'id' of output row"),
        ("checked", "violates check constraint"),
        ("typed", "column 'id' is Int64 here but uuid in the table"),
    ] {
        let t = pg.table(table);
        let err = wd.fails(
            &[
                "ingest", "in", "--to", url, "--table", &t, "--mode", "append",
            ],
            1,
        );
        assert_eq!(err.trim().lines().count(), 1, "{table}: {err}");
        assert!(
            err.contains(expected),
            "{table}: expected '{expected}' in {err}"
        );
        assert!(!err.contains(PASSWORD));
        assert_eq!(
            pg.sql(&format!("SELECT count(*) FROM {table}")),
            "0",
            "{table}"
        );
    }
    // Killed while the server takes the rows: no table at all (it was created in the load's
    // transaction).
    load_input(&wd, "big/rows.csv", 1, 600_000, 1);
    let big = pg.table("big");
    let named = pg.url_named();
    let mut child = wd
        .sluice()
        .args(["ingest", "big", "--to", &named, "--table", &big, "--quiet"])
        .spawn()
        .expect("sluice");
    let started = std::time::Instant::now();
    loop {
        let copying = pg.sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}' AND query LIKE 'COPY%'",
            pg.schema
        ));
        if copying != "0" {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the load ended before it was seen"
        );
        assert!(started.elapsed().as_secs() < 60, "no COPY seen");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().expect("kill");
    let _ = child.wait();
    // The server notices the closed connection and rolls the transaction back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let sessions = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}'",
        pg.schema
    );
    while pg.sql(&sessions) != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed load's session stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        pg.sql("SELECT to_regclass('big') IS NULL"),
        "t",
        "no half-loaded table"
    );
}

/// TLS as libpq's `sslmode` says, against the test server's own certificates (made by
/// `.ci/pg.sh`; the server's `ssl_ca_file` names their folder). The role `sluice_tls` may
/// only connect encrypted and `sluice_cert` only with its client certificate, so a read
/// that succeeds as them went over TLS. Each refusal is one line without the password.
#[test]
fn tls_encrypts_and_checks_the_server_as_sslmode_says() {
    let Some(pg) = pg() else { return };
    pg.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g");
    let table = pg.table("t");
    let ca = pg.sql("SHOW ssl_ca_file");
    let tls = std::path::Path::new(&ca)
        .parent()
        .expect("the CA's folder")
        .to_path_buf();
    let file = |name: &str| tls.join(name).display().to_string();
    let port = pg
        .url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("the test server's port")
        .to_string();
    let url = |who: &str, host: &str, query: &str| {
        format!("postgres://{who}@{host}:{port}/sluice?{query}")
    };
    let encrypted = "sluice_tls:sluice-tls-pw";
    let (ca, server_cert) = (file("ca.crt"), file("server.crt"));
    let (client_cert, client_key) = (file("client.crt"), file("client.key"));
    let wd = Workdir::new();
    let reads = [
        // libpq's default (prefer) takes TLS when the server offers it.
        url(encrypted, "127.0.0.1", ""),
        url(encrypted, "127.0.0.1", "sslmode=require"),
        url(
            encrypted,
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        // verify-ca does not check the name: the certificate is for 127.0.0.1 only.
        url(
            encrypted,
            "localhost",
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
        url(
            "sluice_cert",
            "127.0.0.1",
            &format!(
                "sslmode=verify-full&sslrootcert={ca}&sslcert={client_cert}&sslkey={client_key}"
            ),
        ),
    ];
    for (i, source) in reads.iter().enumerate() {
        let out = format!("read{i}");
        let report = wd.ingest(&[source, "--table", &table, "--to", &out]);
        assert_eq!(report["rows_out"], 1000, "{source}: {report}");
        assert_eq!(
            duck(&wd, &out, "SELECT count(*), sum(id) FROM t").as_deref(),
            Some("1000|500500"),
            "{source}"
        );
    }
    // A load over TLS, checked by the server's own count.
    wd.write("in/rows.csv", "id,name\n1,a\n2,b\n3,c\n");
    let loaded = pg.table("loaded");
    wd.ingest(&[
        "in",
        "--to",
        &url(
            encrypted,
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "--table",
        &loaded,
    ]);
    assert_eq!(pg.sql("SELECT count(*), sum(id) FROM loaded"), "3|6");
    let refused = [
        (
            url(encrypted, "127.0.0.1", "sslmode=disable"),
            "no encryption",
        ),
        (
            url(
                encrypted,
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            "certificate not valid for name",
        ),
        // The server's own certificate is not a root it chains to.
        (
            url(
                encrypted,
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={server_cert}"),
            ),
            "UnknownIssuer",
        ),
        (
            url("sluice_cert", "127.0.0.1", "sslmode=require"),
            "certificate",
        ),
        (
            url(
                encrypted,
                "127.0.0.1",
                "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            ),
            "/nonexistent/ca.pem: ",
        ),
        (
            url(encrypted, "127.0.0.1", "sslmode=sometimes"),
            "sslmode 'sometimes' is not one of",
        ),
    ];
    for (i, (source, expected)) in refused.iter().enumerate() {
        let out = format!("refused{i}");
        let err = wd.fails(&["ingest", source, "--table", &table, "--to", &out], 1);
        assert_eq!(err.trim().lines().count(), 1, "{source}: {err}");
        assert!(
            err.contains(expected),
            "{source}: expected '{expected}' in {err}"
        );
        assert!(!err.contains("sluice-tls-pw"), "{err}");
        assert!(!wd.path(&out).exists(), "nothing written for {source}");
    }
    // libpq's variables: PGSSLMODE and PGSSLROOTCERT, and the URL wins over them.
    let env_read = |mode: &str, query: &str, out: &str| {
        wd.sluice()
            .env("PGSSLMODE", mode)
            .env("PGSSLROOTCERT", &ca)
            .args([
                "ingest",
                &url(encrypted, "localhost", query),
                "--table",
                &table,
                "--to",
                out,
                "--quiet",
            ])
            .output()
            .expect("run sluice")
    };
    let full = env_read("verify-full", "", "env0");
    let err = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "{err}");
    assert!(err.contains("certificate not valid for name"), "{err}");
    let by_url = env_read("verify-full", "sslmode=verify-ca", "env1");
    assert!(
        by_url.status.success(),
        "{}",
        String::from_utf8_lossy(&by_url.stderr)
    );
}

/// Lists load into one-dimensional arrays: a table of arrays of every kind (NULL arrays,
/// empty ones, NULL items, text with commas and quotes, enums) read to Parquet and loaded
/// back, into a table sluice creates and into an existing one typed like the source
/// (`numeric(10,2)[]`, an enum array): the server finds every array equal to its source.
#[test]
fn lists_load_into_arrays_that_equal_the_source() {
    let Some(pg) = pg() else { return };
    let columns = "id int, tags text[], nums int[], big bigint[], amts numeric(10,2)[], \
                   xs float8[], ds date[], tss timestamptz[], flags boolean[], ms mood[]";
    pg.sql(&format!(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TABLE src ({columns});
         INSERT INTO src SELECT g,
           CASE WHEN g % 7 = 0 THEN NULL WHEN g % 11 = 0 THEN '{{}}'
                ELSE ARRAY['a' || g, NULL, 'é, \"q\" ' || g] END,
           ARRAY[g, NULL, -g], ARRAY[g::bigint * 1000000000], ARRAY[g * 1.25, NULL]::numeric(10,2)[],
           ARRAY[g / 3.0::float8], ARRAY[date '2024-01-01' + g],
           ARRAY[timestamptz '2024-01-01 00:00+00' + g * interval '1 second'],
           ARRAY[g % 2 = 0, NULL], ARRAY['ok'::mood, 'sad']
         FROM generate_series(1, 3000) g;
         CREATE TABLE typed ({columns});"
    ));
    let wd = Workdir::new();
    let report = wd.ingest(&[&pg.url, "--table", &pg.table("src"), "--to", "parquet"]);
    assert_eq!(report["rows_out"], 3000, "{report}");
    wd.ingest(&["parquet", "--to", &pg.url, "--table", &pg.table("made")]);
    wd.ingest(&[
        "parquet",
        "--to",
        &pg.url,
        "--table",
        &pg.table("typed"),
        "--mode",
        "append",
    ]);
    assert_eq!(
        pg.sql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'made'::regclass AND attname IN ('tags', 'amts', 'tss', 'ms') ORDER BY attname"),
        "numeric(10,2)[]\ntext[]\ntext[]\ntimestamp with time zone[]"
    );
    let same = |table: &str, ms: &str| {
        pg.sql(&format!(
            "SELECT count(*) FROM src s JOIN {table} t USING (id)
             WHERE s.tags IS NOT DISTINCT FROM t.tags AND s.nums IS NOT DISTINCT FROM t.nums
               AND s.big = t.big AND s.amts = t.amts AND s.xs = t.xs AND s.ds = t.ds
               AND s.tss = t.tss AND s.flags IS NOT DISTINCT FROM t.flags AND {ms}"
        ))
    };
    assert_eq!(same("made", "s.ms::text[] = t.ms"), "3000");
    assert_eq!(same("typed", "s.ms = t.ms"), "3000");
    // The generator's NULL and empty arrays, counted here.
    let nulls = (1..=3000).filter(|g| g % 7 == 0).count();
    let empty = (1..=3000).filter(|g| g % 7 != 0 && g % 11 == 0).count();
    assert_eq!(
        pg.sql("SELECT count(*) FILTER (WHERE tags IS NULL), count(*) FILTER (WHERE tags = '{}') FROM made"),
        format!("{nulls}|{empty}")
    );
}
