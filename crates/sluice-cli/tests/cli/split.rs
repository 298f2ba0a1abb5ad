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
fn quoted_newlines_are_detected_and_read_whole() {
    let wd = Workdir::new();
    wd.write("nl.csv", big_csv(60_000, Some(7)));
    let one = run(&wd, "nl.csv", "one.csv", "1");
    let many = run(&wd, "nl.csv", "many.csv", "4");
    assert_eq!(many["unsplit_files"][0], "nl.csv", "{many}");
    assert_eq!(many["input_partitions"], 1, "{many}");
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
