//! `sluice run PIPELINE.toml`

use crate::workdir::Workdir;

#[test]
fn pipeline_runs_source_transforms_and_sink() {
    let wd = Workdir::new();
    wd.write(
        "data/a.csv",
        "id,country,amount\n1,DE,10\n2,FR,-1\n3,DE,5\n",
    );
    wd.write(
        "data/b.ndjson",
        "{\"id\": 4, \"country\": \"US\", \"amount\": 7.5}\n",
    );
    wd.write(
        "jobs/p.toml",
        r#"
[source]
paths = ["../data/*.csv", "../data/b.ndjson"]
file_column = "src"

[[transform]]
name = "positive"
sql = "SELECT * FROM source WHERE amount > 0"

[[transform]]
sql = "SELECT country, sum(amount) AS total, count(*) AS n FROM positive GROUP BY country"

[sink]
path = "../out"
format = "csv"
files = 1
mode = "overwrite"

[settings]
threads = 2
"#,
    );
    let report = wd.path("r.json").display().to_string();
    wd.ok(&["run", "jobs/p.toml", "--report-json", &report, "-q"]);
    let r: serde_json::Value = serde_json::from_str(&wd.read("r.json")).expect("json");
    assert_eq!(r["rows_in"], 4);
    assert_eq!(r["rows_out"], 2);
    assert_eq!(r["rows_removed_by_sql"], 2);
    for key in [
        "files_read",
        "bytes_read",
        "rows_in",
        "rows_out",
        "files_written",
        "seconds",
    ] {
        assert!(r.get(key).is_some(), "report has {key}");
    }
    let rows = wd.query("SELECT * FROM t ORDER BY country", &[("t", "out")]);
    assert_eq!(rows, ["country,total,n", "DE,15.0,2", "US,7.5,1"]);
}

#[test]
fn pipeline_mistakes_name_the_key_and_line() {
    let wd = Workdir::new();
    wd.write("a.csv", "id\n1\n");
    wd.write(
        "p.toml",
        "[source]\npaths = [\"a.csv\"]\n\n[sink]\npath = \"out\"\nfils = 2\n",
    );
    let err = wd.fails(&["run", "p.toml"], 1);
    assert!(
        err.contains("p.toml: line 6: unknown field `fils`"),
        "{err}"
    );
    wd.write(
        "q.toml",
        "[source]\npaths = [\"a.csv\"]\n[sink]\npath = \"out\"\n[[transform]]\nsql = \"SELEC x\"\n",
    );
    let err = wd.fails(&["run", "q.toml"], 1);
    assert!(
        err.contains("transform #1") && err.contains("SELEC x"),
        "{err}"
    );
    wd.write("r.toml", "[source]\npaths = [\"a.csv\"]\n");
    let err = wd.fails(&["run", "r.toml"], 1);
    assert!(err.contains("missing field `sink`"), "{err}");
    let err = wd.fails(&["run", "nope.toml"], 1);
    assert!(err.contains("nope.toml"), "{err}");
}
