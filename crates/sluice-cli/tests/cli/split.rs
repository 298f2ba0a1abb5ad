//! Byte-range splitting of big files gives exactly the rows of an unsplit read.

use crate::workdir::Workdir;

/// A CSV of `rows` rows with quoted commas, doubled quotes and CRLF line ends; with
/// `newline_every`, every n-th text value holds a line break inside its quotes.
fn big_csv(rows: usize, newline_every: Option<usize>) -> String {
    let mut s = String::from("id,amount,text,flag\r\n");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let amount = (x % 100_000) as f64 / 100.0;
        let text = match newline_every {
            Some(n) if i % n == 0 => format!("\"line one of {i}\r\nline two, \"\"quoted\"\"\""),
            _ => format!("\"hello, world {} \"\"q\"\" {}\"", x % 1000, i),
        };
        s.push_str(&format!("{i},{amount},{text},{}\r\n", x.is_multiple_of(2)));
    }
    s
}

fn run(wd: &Workdir, input: &str, out: &str, threads: &str) -> serde_json::Value {
    wd.ingest(&[
        input,
        "--to",
        out,
        "--threads",
        threads,
        "--sql",
        "SELECT * FROM source ORDER BY id",
    ])
}

#[test]
fn split_big_csv_gives_identical_rows() {
    let wd = Workdir::new();
    wd.write("big.csv", big_csv(120_000, None));
    let one = run(&wd, "big.csv", "one.csv", "1");
    let many = run(&wd, "big.csv", "many.csv", "4");
    assert_eq!(one["input_partitions"], 1, "{one}");
    assert!(
        many["input_partitions"].as_u64() >= Some(4),
        "file was not split: {many}"
    );
    assert_eq!(one["rows_out"], 120_000);
    assert_eq!(many["rows_out"], 120_000);
    let (a, b) = (wd.read("one.csv"), wd.read("many.csv"));
    assert!(a == b, "split and unsplit reads differ");
    assert!(a.contains("\"hello, world"), "quoted commas survive");
}

// regression: a quoted line break at a split edge must not cut the row
#[test]
fn files_with_quoted_newlines_are_split_at_record_starts() {
    let wd = Workdir::new();
    // Every second value holds a line break, so most cuts land inside quotes.
    for every in [2, 7] {
        let name = format!("nl{every}.csv");
        wd.write(&name, big_csv(60_000, Some(every)));
        let one = run(&wd, &name, &format!("one{every}.csv"), "1");
        let many = run(&wd, &name, &format!("many{every}.csv"), "4");
        assert_eq!(many["unsplit_files"], serde_json::json!([]), "{many}");
        assert!(
            many["input_partitions"].as_u64() >= Some(4),
            "not split: {many}"
        );
        assert_eq!(one["rows_out"], 60_000);
        assert_eq!(many["rows_out"], 60_000);
        assert!(wd.read(&format!("one{every}.csv")) == wd.read(&format!("many{every}.csv")));
    }
}

#[test]
fn newlines_in_values_true_reads_files_whole() {
    let wd = Workdir::new();
    wd.write("nl.csv", big_csv(40_000, Some(5)));
    let report = wd.ingest(&[
        "nl.csv",
        "--to",
        "o",
        "--threads",
        "4",
        "--newlines-in-values",
        "true",
    ]);
    assert_eq!(report["input_partitions"], 1, "{report}");
    assert_eq!(report["rows_out"], 40_000);
}

#[test]
fn newlines_in_values_false_splits_at_line_breaks() {
    let wd = Workdir::new();
    wd.write("plain.csv", big_csv(80_000, None));
    let one = run(&wd, "plain.csv", "one.csv", "1");
    let many = wd.ingest(&[
        "plain.csv",
        "--to",
        "many.csv",
        "--threads",
        "4",
        "--newlines-in-values",
        "false",
        "--sql",
        "SELECT * FROM source ORDER BY id",
    ]);
    assert!(
        many["input_partitions"].as_u64() >= Some(4),
        "not split: {many}"
    );
    assert_eq!(one["rows_out"], many["rows_out"]);
    assert!(wd.read("one.csv") == wd.read("many.csv"));
}

#[test]
fn stray_quotes_keep_a_file_whole_and_correct() {
    let wd = Workdir::new();
    let mut s = String::from("id,size,label\n");
    for i in 0..60_000 {
        s.push_str(&format!("{i},{}\" screen,\"quoted, {i}\"\n", i % 90));
    }
    wd.write("stray.csv", &s);
    let one = run(&wd, "stray.csv", "one.csv", "1");
    let many = run(&wd, "stray.csv", "many.csv", "4");
    assert_eq!(many["unsplit_files"][0], "stray.csv", "{many}");
    assert_eq!(one["rows_out"], 60_000);
    assert_eq!(many["rows_out"], 60_000);
    assert!(wd.read("one.csv") == wd.read("many.csv"));
}

#[test]
fn many_files_and_split_files_mix() {
    let wd = Workdir::new();
    wd.write("in/big.csv", big_csv(80_000, None));
    for i in 0..6 {
        wd.write(
            &format!("in/small-{i}.csv"),
            format!("id,amount,text,flag\n{},1.0,x,true\n", 1_000_000 + i),
        );
    }
    let one = run(&wd, "in", "one.csv", "1");
    let many = run(&wd, "in", "many.csv", "3");
    assert_eq!(many["rows_out"], 80_006);
    assert_eq!(one["rows_out"], 80_006);
    assert!(wd.read("one.csv") == wd.read("many.csv"));
}
