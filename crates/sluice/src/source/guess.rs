//! The column types of a CSV sample, as arrow-csv's `Format::infer_schema` guesses them,
//! without its cost.
//!
//! arrow-csv reads the sample a second time with the `csv` crate and tests every value of
//! every column against a set of eight regular expressions; that was a quarter of the CPU
//! of opening 32 files. Here the records come from sluice's own framing (csv-core, as the
//! `csv` crate reads them), a column that already reads as text is not looked at again (its
//! type can only stay text), and the values that are plainly text, integers or decimals are
//! told without the expressions. Everything else goes through the very same expressions,
//! and the tests hold the result equal to arrow's on random samples.

use std::sync::LazyLock;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::framer::{each_record, CsvRules};

/// arrow-csv's expressions, in its order (the first that matches names the type).
static PATTERNS: LazyLock<regex::RegexSet> = LazyLock::new(|| {
    regex::RegexSet::new([
        r"(?i)^(true)$|^(false)$(?-i)",
        r"^-?(\d+)$",
        r"^-?((\d*\.\d+|\d+\.\d*)([eE][-+]?\d+)?|\d+([eE][-+]?\d+))$",
        r"^\d{4}-\d\d-\d\d$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[^\d\.].*)?$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,3}(?:[^\d].*)?$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,6}(?:[^\d].*)?$",
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,9}(?:[^\d].*)?$",
    ])
    .expect("arrow-csv's type patterns compile")
});

/// The bit of a value that reads as text.
const TEXT: u16 = 1 << 8;
/// The bit of an integer.
const INTEGER: u16 = 1 << 1;
/// The bit of a decimal.
const DECIMAL: u16 = 1 << 2;

/// The schema arrow-csv's `Format::infer_schema` gives the first `rows` records of `data`
/// (after the header line when `header`; unnamed columns are `column_1`, `column_2`, ...),
/// an empty value or `null_value` being NULL. `None` when this reading may differ from
/// arrow's, and arrow's inference must run: an escape character (arrow's reader also takes
/// doubled quotes then), a byte-order mark (its reader drops it), a record of another width
/// or text that is not UTF-8 (its reader fails on them; the sampler drops such rows first).
pub(crate) fn infer(
    data: &[u8],
    rules: CsvRules,
    header: bool,
    rows: usize,
    null_value: Option<&str>,
) -> Option<Schema> {
    if rules.escape.is_some() || data.starts_with(b"\xef\xbb\xbf") {
        return None;
    }
    let mut names: Option<Vec<String>> = None;
    let mut seen: Vec<u16> = Vec::new();
    let (mut records, mut ok) = (0usize, true);
    each_record(data, true, rules, |r| {
        let mut fields = Vec::with_capacity(r.width());
        for f in r.fields() {
            match std::str::from_utf8(f) {
                Ok(s) => fields.push(s),
                Err(_) => {
                    ok = false;
                    return false;
                }
            }
        }
        let Some(names) = &names else {
            seen = vec![0; fields.len()];
            names = Some(match header {
                true => fields.iter().map(|s| s.to_string()).collect(),
                false => (1..=fields.len()).map(|i| format!("column_{i}")).collect(),
            });
            if header {
                return true;
            }
            return note(&mut seen, &fields, null_value, &mut records, rows);
        };
        if fields.len() != names.len() {
            ok = false;
            return false;
        }
        note(&mut seen, &fields, null_value, &mut records, rows)
    });
    if !ok {
        return None;
    }
    let fields: Vec<Field> = names
        .unwrap_or_default()
        .into_iter()
        .zip(&seen)
        .map(|(name, bits)| Field::new(name, data_type(*bits), true))
        .collect();
    Some(Schema::new(fields))
}

/// Takes one record's values into `seen` (unless `rows` records were taken): false when
/// no more are wanted.
fn note(
    seen: &mut [u16],
    fields: &[&str],
    null_value: Option<&str>,
    records: &mut usize,
    rows: usize,
) -> bool {
    if *records >= rows {
        return false;
    }
    *records += 1;
    for (bits, s) in seen.iter_mut().zip(fields) {
        // A column read as text stays text whatever follows.
        if *bits & TEXT == 0 && !s.is_empty() && Some(*s) != null_value {
            *bits |= kind(s);
        }
    }
    *records < rows
}

/// The bit arrow-csv's `InferredDataType::update` sets for `s`.
fn kind(s: &str) -> u16 {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return pattern(s);
    };
    // No pattern starts with another ASCII byte (a literal quote makes text in arrow's rule
    // too): only NaN, nan and inf can still be more than text.
    if first.is_ascii()
        && !first.is_ascii_digit()
        && !matches!(first, b'-' | b'.' | b't' | b'T' | b'f' | b'F')
    {
        return unpatterned(s);
    }
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    let all_digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
    if all_digits(digits) {
        // An integer, unless it overflows an i64.
        return if s.len() >= 19 && s.parse::<i64>().is_err() {
            TEXT
        } else {
            INTEGER
        };
    }
    if let Some(dot) = memchr::memchr(b'.', digits) {
        if all_digits(&digits[..dot]) && all_digits(&digits[dot + 1..]) {
            return DECIMAL;
        }
    }
    pattern(s)
}

/// arrow-csv's rule for a value the shortcuts do not decide.
fn pattern(s: &str) -> u16 {
    if s.starts_with('"') {
        TEXT
    } else if let Some(m) = PATTERNS.matches(s).into_iter().next() {
        if m == 1 && s.len() >= 19 && s.parse::<i64>().is_err() {
            TEXT
        } else {
            1 << m
        }
    } else {
        unpatterned(s)
    }
}

/// arrow-csv's rule for a value no pattern matches: its four names of non-numbers are
/// decimals, anything else is text.
fn unpatterned(s: &str) -> u16 {
    if s == "NaN" || s == "nan" || s == "inf" || s == "-inf" {
        DECIMAL
    } else {
        TEXT
    }
}

/// arrow-csv's `InferredDataType::get`: the type of a column whose values set `bits`.
fn data_type(bits: u16) -> DataType {
    match bits {
        0 => DataType::Null,
        1 => DataType::Boolean,
        2 => DataType::Int64,
        4 | 6 => DataType::Float64,
        b if b != 0 && (b & !0b11111000) == 0 => match b.leading_zeros() {
            8 => DataType::Timestamp(TimeUnit::Nanosecond, None),
            9 => DataType::Timestamp(TimeUnit::Microsecond, None),
            10 => DataType::Timestamp(TimeUnit::Millisecond, None),
            11 => DataType::Timestamp(TimeUnit::Second, None),
            _ => DataType::Date32,
        },
        _ => DataType::Utf8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Values that test every rule: plain and signed numbers, numbers too long for an i64,
    /// exponents, NaN and infinities, booleans in any case (and a long s that folds to s),
    /// dates and timestamps of every precision, Unicode digits, literal quotes, the NULL
    /// string.
    const VALUES: &[&str] = &[
        "0",
        "42",
        "-7",
        "+7",
        "007",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234",
        "1.5",
        "-0.25",
        ".5",
        "5.",
        "-.5",
        "1e5",
        "1.5E-3",
        "-2e+10",
        "1e",
        "NaN",
        "nan",
        "inf",
        "-inf",
        "Infinity",
        "true",
        "TRUE",
        "False",
        "fal\u{17f}e",
        "t",
        "yes",
        "2024-01-31",
        "2024-1-31",
        "2024-01-31 10:20:30",
        "2024-01-31T10:20:30Z",
        "2024-01-31T10:20:30.5",
        "2024-01-31 10:20:30.123456",
        "2024-01-31 10:20:30.123456789",
        "2024-01-31 10:20:30.1234567890",
        "2024-01-31 10:20:30+02:00",
        "2024-01-31x",
        "\u{661}\u{662}",
        "-\u{661}",
        "1\u{662}.5",
        "\"quoted\"",
        "a\"b",
        "text",
        " 1",
        "1 ",
        "-",
        ".",
        "",
        "NA",
        "null",
        "N/A",
        "é",
        "i",
        "n",
        "Nan",
        "NAN",
        "nanny",
        "id06596",
        "inf ",
    ];

    fn field(rng: &mut StdRng, column: &[&str]) -> String {
        let v = column[rng.random_range(0..column.len())];
        // Now and then quoted (the quotes are no part of the value).
        if rng.random_range(0..6) == 0 {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v.to_string()
        }
    }

    /// The types guessed here equal arrow-csv's on random samples: columns drawn from a few
    /// of the values above (so a column is often all integers, all dates, ...), with and
    /// without a header, with and without a NULL string, all rows or the first few.
    #[test]
    fn the_types_are_arrows() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut types = std::collections::BTreeSet::new();
        for case in 0..3000 {
            let width = rng.random_range(1..5);
            let columns: Vec<Vec<&str>> = (0..width)
                .map(|_| {
                    (0..rng.random_range(1..4))
                        .map(|_| VALUES[rng.random_range(0..VALUES.len())])
                        .collect()
                })
                .collect();
            let header = rng.random_range(0..2) == 0;
            let mut text = String::new();
            if header {
                let names: Vec<String> = (0..width).map(|i| format!("h{i}")).collect();
                text.push_str(&names.join(","));
                text.push('\n');
            }
            for _ in 0..rng.random_range(0..12) {
                let row: Vec<String> = columns.iter().map(|c| field(&mut rng, c)).collect();
                // A row of one empty field is an empty line to csv-core: no record.
                text.push_str(&row.join(","));
                text.push_str(["\n", "\r\n"][rng.random_range(0..2)]);
            }
            let rows = [1000, 3, 1][rng.random_range(0..3)];
            let null_value = [None, Some("NA"), Some("null")][rng.random_range(0..3)];
            let rules = CsvRules {
                delimiter: b',',
                quote: b'"',
                escape: None,
                comment: None,
            };
            let mut format = datafusion::arrow::csv::reader::Format::default()
                .with_header(header)
                .with_delimiter(b',')
                .with_quote(b'"');
            if let Some(v) = null_value {
                let re =
                    regex::Regex::new(&format!("^({}|)$", regex::escape(v))).expect("null pattern");
                format = format.with_null_regex(re);
            }
            let want = format.infer_schema(text.as_bytes(), Some(rows));
            let got = infer(text.as_bytes(), rules, header, rows, null_value);
            match (want, got) {
                (Ok((want, _)), Some(got)) => {
                    assert_eq!(got, want, "case {case}: {text:?}");
                    types.extend(got.fields().iter().map(|f| f.data_type().to_string()));
                }
                // Rows of other widths (a row of one empty field): arrow fails, and so
                // does this reading (the sampler drops such rows before either runs).
                (Err(_), None) => {}
                (want, got) => panic!("case {case}: {text:?}: arrow {want:?}, here {got:?}"),
            }
        }
        // Every type arrow guesses was guessed.
        assert!(types.len() >= 9, "{types:?}");
    }
}
