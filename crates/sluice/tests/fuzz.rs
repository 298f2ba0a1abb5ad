//! Seeded fuzzing of the CSV reader through the public API: arbitrary bytes never panic,
//! never fail the job in `reject` mode, and every row is accounted for: `rows_in` is the
//! number of records counted independently (the `csv` crate for CSV, lines with content for
//! NDJSON), the report's identity holds, the manifest holds `rows_out` rows, and the rejects
//! file holds exactly `rows_rejected` records. CSV and NDJSON, a fixed number of seeded cases each (not a time
//! budget: a loaded machine must not turn into fewer cases or a failure).

use sluice::source::OnError;
use sluice::{Job, Progress, ReadOptions, SinkOptions};

const ALPHABET: &[u8] = b"a1,,\"\"\n\r 9.-\xff\xfe\t";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_csv(rng: &mut Rng) -> Vec<u8> {
    let mut out = b"a,b,c\n".to_vec();
    let len = (rng.next() % 3000) as usize;
    for _ in 0..len {
        // Mostly well-formed rows, with random bytes mixed in.
        if rng.next().is_multiple_of(5) {
            out.push(ALPHABET[(rng.next() % ALPHABET.len() as u64) as usize]);
        } else {
            let row = format!(
                "{},{}.5,\"x{}\"\n",
                rng.next() % 100,
                rng.next() % 10,
                rng.next() % 7
            );
            out.extend_from_slice(row.as_bytes());
        }
    }
    out
}

const JSON_ALPHABET: &[u8] = b"{}[]\":,1a \n\xff";

fn random_ndjson(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let len = (rng.next() % 2000) as usize;
    for _ in 0..len {
        if rng.next().is_multiple_of(5) {
            out.push(JSON_ALPHABET[(rng.next() % JSON_ALPHABET.len() as u64) as usize]);
        } else {
            let row = format!(
                "{{\"a\": {}, \"b\": {}.5, \"c\": \"x{}\"}}\n",
                rng.next() % 100,
                rng.next() % 10,
                rng.next() % 7
            );
            out.extend_from_slice(row.as_bytes());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_csv_bytes_are_all_accounted_for() {
    fuzz("in.csv", random_csv, csv_records, CASES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_ndjson_bytes_are_all_accounted_for() {
    fuzz("in.ndjson", random_ndjson, ndjson_records, CASES).await;
}

/// Records in a CSV file with a header, by the `csv` crate (csv-core's framing, the rules
/// arrow's decoder follows), not by sluice's own framer.
fn csv_records(bytes: &[u8]) -> u64 {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes)
        .byte_records()
        .count() as u64
}

/// Records in an NDJSON file: lines holding more than white space.
fn ndjson_records(bytes: &[u8]) -> u64 {
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .count() as u64
}

/// Seeded cases per format.
const CASES: usize = 40;

async fn fuzz(
    name: &str,
    generate: fn(&mut Rng) -> Vec<u8>,
    records: fn(&[u8]) -> u64,
    total: usize,
) {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for cases in 1..=total {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join(name);
        let bytes = generate(&mut rng);
        if bytes.is_empty() {
            continue;
        }
        let expected = records(&bytes);
        std::fs::write(&input, bytes).expect("write");
        let out = dir.path().join("out");
        let job = Job {
            source: ReadOptions {
                paths: vec![input.display().to_string()],
                schema: Some("a BIGINT, b DOUBLE, c VARCHAR".into()),
                on_error: OnError::Reject,
                // Small splits so that cuts and recovery meet.
                split_min_size: Some(1),
                ..ReadOptions::default()
            },
            stages: vec![],
            sink: SinkOptions {
                path: out.display().to_string(),
                ..SinkOptions::default()
            },
            threads: 3,
            ..Job::default()
        };
        let report = match job.run(&Progress::default()).await {
            Ok(r) => r,
            // A file with no readable sample at all is a whole-file fault, reported as such.
            Err(e) if e.to_string().contains(name) => continue,
            Err(e) => panic!("case {cases}: the job failed: {e}"),
        };
        assert_eq!(
            report.rows_in, expected,
            "case {cases}: records in the file"
        );
        assert_eq!(
            report.rows_in,
            report.rows_out + report.rows_rejected + report.rows_skipped,
            "case {cases}"
        );
        let manifest = sluice::sink::read_manifest(&out).expect("manifest");
        assert_eq!(manifest.rows, report.rows_out, "case {cases}");
        let rejects =
            std::fs::read_to_string(out.join("_rejects/rejects.ndjson")).unwrap_or_default();
        assert_eq!(
            rejects.lines().count() as u64,
            report.rows_rejected,
            "case {cases}"
        );
    }
}
