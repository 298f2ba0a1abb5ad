//! Seeded generator of the benchmark data.
//!
//! `datagen OUT_DIR [--files 32] [--rows 150000] [--seed 42]` writes:
//! - `OUT_DIR/many/part-NN.csv`: `files` CSV files of `rows` rows, 8 columns (int id,
//!   timestamp, int quantity, 20-value country, float amount, 50-value category, bool,
//!   quoted text with commas);
//! - `OUT_DIR/big.csv`: the same rows as one file;
//! - `OUT_DIR/drift/part-NN.csv`: the same rows with schema drift: every fourth file has its
//!   columns in another order, every fourth lacks `flag`, every fourth has an extra `note`
//!   column, and every fourth writes `quantity` with a decimal point.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

const COUNTRIES: [&str; 20] = [
    "DE", "FR", "US", "GB", "IT", "ES", "NL", "BE", "PL", "SE", "NO", "DK", "FI", "AT", "CH", "PT",
    "IE", "CZ", "JP", "BR",
];

const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

/// splitmix64: small, fast and good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Row {
    id: u64,
    ts: String,
    quantity: u64,
    country: &'static str,
    amount: String,
    category: String,
    flag: bool,
    text: String,
}

fn row(rng: &mut Rng, id: u64) -> Row {
    let secs = 1_704_067_200 + rng.below(366 * 86_400); // during 2024
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let ts = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    );
    let w1 = WORDS[rng.below(16) as usize];
    let w2 = WORDS[rng.below(16) as usize];
    Row {
        id,
        ts,
        quantity: 1 + rng.below(20),
        country: COUNTRIES[rng.below(20) as usize],
        amount: format!("{}.{:02}", rng.below(10_000), rng.below(100)),
        category: format!("cat_{:02}", rng.below(50)),
        flag: rng.below(2) == 0,
        text: format!("\"{w1}, {w2} and {}\"", rng.below(1000)),
    }
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const HEADER: [&str; 8] = [
    "id", "ts", "quantity", "country", "amount", "category", "flag", "text",
];

fn field(r: &Row, name: &str, float_quantity: bool) -> String {
    match name {
        "id" => r.id.to_string(),
        "ts" => r.ts.clone(),
        "quantity" if float_quantity => format!("{}.0", r.quantity),
        "quantity" => r.quantity.to_string(),
        "country" => r.country.to_string(),
        "amount" => r.amount.clone(),
        "category" => r.category.clone(),
        "flag" => r.flag.to_string(),
        "text" => r.text.clone(),
        "note" => format!("n{}", r.id % 7),
        _ => String::new(),
    }
}

fn create(path: &Path) -> std::io::Result<BufWriter<File>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Ok(BufWriter::with_capacity(1 << 20, File::create(path)?))
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = None;
    let (mut files, mut rows, mut seed) = (32u64, 150_000u64, 42u64);
    let mut i = 0;
    while i < args.len() {
        let value = |i: usize| -> u64 {
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{} needs a number", args[i])))
        };
        match args[i].as_str() {
            "--files" => files = value(i),
            "--rows" => rows = value(i),
            "--seed" => seed = value(i),
            "-h" | "--help" => usage(""),
            other if out.is_none() => out = Some(PathBuf::from(other)),
            other => usage(&format!("unexpected argument {other}")),
        }
        i += if args[i].starts_with("--") { 2 } else { 1 };
    }
    let out = out.unwrap_or_else(|| usage("OUT_DIR is required"));
    let mut rng = Rng(seed);
    let mut big = create(&out.join("big.csv"))?;
    writeln!(big, "{}", HEADER.join(","))?;
    for f in 0..files {
        let name = format!("part-{f:02}.csv");
        let mut many = create(&out.join("many").join(&name))?;
        let mut drift = create(&out.join("drift").join(&name))?;
        writeln!(many, "{}", HEADER.join(","))?;
        let mut cols: Vec<&str> = HEADER.to_vec();
        match f % 4 {
            0 => cols.reverse(),
            1 => cols.retain(|c| *c != "flag"),
            2 => cols.push("note"),
            _ => {}
        }
        let float_quantity = f % 4 == 3;
        writeln!(drift, "{}", cols.join(","))?;
        for r in 0..rows {
            let row = row(&mut rng, f * rows + r);
            let line = HEADER
                .iter()
                .map(|c| field(&row, c, false))
                .collect::<Vec<_>>()
                .join(",");
            writeln!(many, "{line}")?;
            writeln!(big, "{line}")?;
            let drifted = cols
                .iter()
                .map(|c| field(&row, c, float_quantity))
                .collect::<Vec<_>>()
                .join(",");
            writeln!(drift, "{drifted}")?;
        }
        many.flush()?;
        drift.flush()?;
    }
    big.flush()?;
    Ok(())
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("datagen: {msg}");
    }
    eprintln!("usage: datagen OUT_DIR [--files 32] [--rows 150000] [--seed 42]");
    std::process::exit(2)
}
