//! Seeded fuzzing of the Parquet and ORC readers with damaged files: metadata bytes
//! overwritten (absurd row-group, stripe, column and row counts, lying lengths), footer
//! lengths set to absurd values, files cut short, data pages damaged. A damaged file must
//! end as a clear one-line error naming it (a failed file), or be read with every row
//! accounted for, never a crash or a huge allocation: the process's peak memory is checked
//! at the end. (orc-rust asserts on some damaged schemas: that panic is caught in the
//! file's own task and reported as the file's failure, which is checked here too.) A fixed number of seeded cases per reader, so the run is bounded in CI.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use sluice::source::OnError;
use sluice::{Job, Progress, ReadOptions, SinkOptions};

/// Rows in each generated file.
const ROWS: usize = 3000;

/// Seeded cases per reader.
const CASES: usize = 400;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn batch(from: usize, rows: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Float64, true),
        Field::new("c", DataType::Utf8, true),
    ]));
    let a: ArrayRef = Arc::new(Int64Array::from_iter_values(
        (from..from + rows).map(|i| i as i64),
    ));
    let b: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (from..from + rows).map(|i| i as f64 / 4.0),
    ));
    let c: ArrayRef = Arc::new(StringArray::from_iter_values(
        (from..from + rows).map(|i| format!("value {i}")),
    ));
    RecordBatch::try_new(schema, vec![a, b, c]).expect("batch")
}

/// A Parquet file of [`ROWS`] rows in six row groups.
fn parquet_file() -> Vec<u8> {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROWS / 6))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch(0, 1).schema(), Some(props)).expect("writer");
    for part in 0..6 {
        w.write(&batch(part * ROWS / 6, ROWS / 6)).expect("write");
    }
    w.close().expect("close");
    out
}

/// An ORC file of [`ROWS`] rows in several stripes.
fn orc_file() -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = orc_rust::ArrowWriterBuilder::new(&mut out, batch(0, 1).schema())
        .with_stripe_byte_size(16 << 10)
        .try_build()
        .expect("writer");
    for part in 0..6 {
        w.write(&batch(part * ROWS / 6, ROWS / 6)).expect("write");
    }
    w.close().expect("close");
    out
}

/// The metadata of the file: Parquet's footer (thrift, before its 4-byte length and `PAR1`),
/// ORC's footer and postscript (before the one-byte postscript length).
fn metadata_range(bytes: &[u8], parquet: bool) -> std::ops::Range<usize> {
    let n = bytes.len();
    if parquet {
        let len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().expect("4 bytes")) as usize;
        n - 8 - len..n - 8
    } else {
        // The postscript and the footer before it sit in the last few hundred bytes.
        n.saturating_sub(400)..n - 1
    }
}

/// One damaged copy of `good`.
fn damage(good: &[u8], parquet: bool, rng: &mut Rng) -> (Vec<u8>, String) {
    let mut bytes = good.to_vec();
    let n = bytes.len();
    let meta = metadata_range(good, parquet);
    match rng.below(6) {
        // Absurd counts and lengths: metadata bytes set to 0xff (huge varints), 0x00 or
        // random values.
        0..=2 => {
            let k = 1 + rng.below(8);
            for _ in 0..k {
                let at = meta.start + rng.below(meta.len());
                bytes[at] = match rng.below(3) {
                    0 => 0xff,
                    1 => 0x00,
                    _ => rng.next() as u8,
                };
            }
            (bytes, format!("{k} metadata bytes"))
        }
        // A lying footer / postscript length.
        3 => {
            let lie = [
                u32::MAX,
                (n as u32).wrapping_add(1),
                n as u32 - 9,
                rng.next() as u32,
                0,
            ][rng.below(5)];
            if parquet {
                bytes[n - 8..n - 4].copy_from_slice(&lie.to_le_bytes());
            } else {
                bytes[n - 1] = lie as u8;
            }
            (bytes, format!("length {lie}"))
        }
        // Cut short.
        4 => {
            let keep = rng.below(n);
            bytes.truncate(keep);
            (bytes, format!("cut at {keep}"))
        }
        // Data pages / stripes damaged.
        _ => {
            let from = rng.below(meta.start);
            for b in bytes.iter_mut().skip(from).take(64) {
                *b = rng.next() as u8;
            }
            (bytes, format!("64 data bytes at {from}"))
        }
    }
}

/// Peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn fuzz(name: &str, good: Vec<u8>, parquet: bool, seed: u64) {
    let mut rng = Rng(seed);
    let (mut read, mut failed, mut contained) = (0, 0, 0);
    for case in 1..=CASES {
        let (bytes, what) = damage(&good, parquet, &mut rng);
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join(name);
        std::fs::write(&input, &bytes).expect("write");
        let out = dir.path().join("out");
        let job = Job {
            source: ReadOptions {
                paths: vec![input.display().to_string()],
                on_error: OnError::Reject,
                ..ReadOptions::default()
            },
            stages: vec![],
            sink: SinkOptions {
                path: out.display().to_string(),
                ..SinkOptions::default()
            },
            threads: 2,
            ..Job::default()
        };
        let ctx = format!("{name} case {case} ({what})");
        match job.run(&Progress::default()).await {
            Ok(report) => {
                read += 1;
                assert_eq!(
                    report.rows_in,
                    report.rows_out + report.rows_rejected + report.rows_skipped,
                    "{ctx}"
                );
                assert!(report.files_failed.is_empty(), "{ctx}");
                assert!(out.join("_SUCCESS").exists(), "{ctx}");
            }
            Err(e) => {
                failed += 1;
                let msg = e.to_string();
                if std::env::var("FUZZ_SHOW").is_ok() {
                    eprintln!("{ctx}: {msg}");
                }
                assert!(msg.contains(name), "{ctx}: the error names no file: {msg}");
                assert!(!msg.contains('\n'), "{ctx}: not one line: {msg}");
                // A reader library that panics (orc-rust asserts on some schemas) may
                // only cost its file: the panic is caught in the file's task and reported.
                if msg.contains("panicked") {
                    assert!(
                        msg.contains("the reader crashed on this file"),
                        "{ctx}: a panic escaped its file's task: {msg}"
                    );
                    contained += 1;
                }
                // Nothing is committed for a failed job.
                assert!(!out.join("_SUCCESS").exists(), "{ctx}");
            }
        }
    }
    // Most damage must be noticed; some (a statistics byte, a page of values) is not.
    assert!(
        failed > CASES / 3,
        "{name}: only {failed} of {CASES} failed"
    );
    // No case may have allocated its way towards the machine's memory.
    let peak = peak_rss_kib();
    eprintln!(
        "{name}: {failed} failed ({contained} by a contained reader panic), {read} read; peak RSS {peak} KiB"
    );
    assert!(peak < 2 << 20, "{name}: peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_parquet_files_fail_cleanly() {
    fuzz("in.parquet", parquet_file(), true, 0xBAD_5EED_0001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_orc_files_fail_cleanly() {
    fuzz("in.orc", orc_file(), false, 0xBAD_5EED_0002).await;
}
