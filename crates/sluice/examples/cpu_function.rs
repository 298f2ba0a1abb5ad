//! A CPU-heavy custom batch function, run on every partition in parallel.
//!
//! ```sh
//! cargo run --release -p sluice --example cpu_function -- --threads 2 --rows 400000
//! ```
//!
//! (`bash bench/scaling.sh` builds the same file as the `cpu_function` binary of the bench
//! crate, which shares the CLI's build instead of compiling the stack once more.)
//!
//! Generates a CSV of short texts (seeded), then scores every text with a regex and an
//! iterated hash — the kind of per-row work Python needs `multiprocessing` for — and writes
//! the scores as Parquet. Prints one line: `threads=N rows=R seconds=S`. `bash
//! bench/scaling.sh` runs it with 1 and 2 threads side by side and prints the speed-up.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use sluice::datafusion::arrow::array::{Array, Float64Array, RecordBatch, StringArray};
use sluice::datafusion::arrow::datatypes::{DataType, Field, Schema};
use sluice::datafusion::error::DataFusionError;
use sluice::sink::WriteMode;
use sluice::{Pipeline, ReadOptions, SinkOptions};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seeded texts: words from a small vocabulary.
fn write_input(path: &std::path::Path, rows: usize) -> std::io::Result<()> {
    const WORDS: &[&str] = &[
        "river",
        "sluice",
        "queue",
        "aqueous",
        "batch",
        "arrow",
        "parquet",
        "audio",
        "ideaa",
        "column",
        "partition",
        "cooperate",
        "engine",
        "tokio",
        "beautiful",
        "onion",
    ];
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "id,text")?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..rows {
        let mut words = Vec::with_capacity(8);
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            words.push(WORDS[(x % WORDS.len() as u64) as usize]);
        }
        writeln!(out, "{i},{}", words.join(" "))?;
    }
    out.flush()
}

/// The score of one text: vowel runs found by a regex, mixed with an iterated hash.
fn score(re: &regex::Regex, text: &str) -> f64 {
    let runs = re.find_iter(text).count() as f64;
    let mut h = blake3::hash(text.as_bytes());
    for _ in 0..40 {
        h = blake3::hash(h.as_bytes());
    }
    runs + f64::from(h.as_bytes()[0]) / 256.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads = arg("--threads", 2);
    let rows = arg("--rows", 200_000);
    // A fresh scratch folder (removed at the end).
    let dir = std::env::temp_dir().join(format!("sluice-cpu-function-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("texts.csv");
    write_input(&input, rows)?;

    let re = Arc::new(regex::Regex::new("[aeiou]{2,}")?);
    let started = Instant::now();
    let report = Pipeline::read_with(ReadOptions {
        paths: vec![input.display().to_string()],
        // Split the one file so that every thread gets a share.
        split_min_size: Some(64 * 1024),
        ..ReadOptions::default()
    })
    .map_batches("scored", move |batch: RecordBatch| {
        let text = batch
            .column_by_name("text")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| DataFusionError::Execution("no text column".into()))?;
        let scores: Float64Array = (0..text.len())
            .map(|i| (!text.is_null(i)).then(|| score(&re, text.value(i))))
            .collect();
        let mut fields = batch.schema().fields().to_vec();
        fields.push(Arc::new(Field::new("score", DataType::Float64, true)));
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(scores));
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    })
    .threads(threads)
    .write(SinkOptions {
        path: dir.join("out").display().to_string(),
        mode: WriteMode::Overwrite,
        ..SinkOptions::default()
    })
    .run()
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(report.rows_out as usize, rows, "every row is scored");
    println!("threads={threads} rows={rows} seconds={seconds:.3}");
    Ok(())
}
