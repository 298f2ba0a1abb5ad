//! Record-aligned byte-range splitting of big CSV files.
//!
//! DataFusion splits a CSV file at arbitrary byte offsets and starts each range at the next
//! line break, which cuts a quoted value holding a line break in two. Knowing for sure
//! whether an offset lies inside quotes means reading everything before it, which would cost
//! a second pass over the file. Instead, sluice reads a small window around each cut and
//! parses it twice, once assuming the window starts outside quotes and once inside: the
//! right assumption yields whole records with the file's column count and quotes only at
//! field edges, the wrong one does not. The cut moves to the first record start after the target under the one hypothesis
//! that holds. When neither or both hold (a one-column file, dirty rows, a window with too
//! few records) the file is not cut there: slower, never wrong.
//!
//! The ranges are handed to DataFusion with splitting turned off for the scan, so they stay
//! exactly as planned; DataFusion's reader starts a range right after the line break before
//! its start and ends it at the line break at or after its end, which here are the record
//! boundaries themselves.

use super::framer::{CsvRules, RecordScan};

/// What a window parse needs to know about the file.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// How its records are quoted, escaped and commented.
    pub rules: CsvRules,
    /// Columns every record must have.
    pub columns: usize,
    /// Records are plain lines (NDJSON): cut after the first line break at the target.
    pub lines: bool,
}

/// Bytes read on each side of a cut.
pub const WINDOW: u64 = 64 * 1024;

/// Whole records a hypothesis must parse to be believed.
const MIN_RECORDS: usize = 4;

/// The line ends (offsets just after a line feed outside quotes) found by framing `window`
/// strictly from the given starting quote state (the scan's own framer, see
/// [`RecordScan::strict_line_ends`]), or `None` if the window breaks the rules of a clean
/// file under that hypothesis.
fn record_ends(window: &[u8], d: &Dialect, start_in_quote: bool) -> Option<Vec<usize>> {
    let scan = if start_in_quote {
        RecordScan::csv_in_quotes(d.rules, 0)
    } else {
        RecordScan::csv(d.rules, 0)
    };
    scan.strict_line_ends(window, d.columns)
}

/// The first record start at or after `target` (an offset into `window`), if exactly one
/// quote-state hypothesis parses `window` into well-formed records.
pub fn aligned_cut(window: &[u8], target: usize, d: &Dialect) -> Option<usize> {
    if d.lines {
        let cut = target + memchr::memchr(b'\n', window.get(target..)?)? + 1;
        return (cut < window.len()).then_some(cut);
    }
    if d.columns < 2 {
        return None;
    }
    let out = record_ends(window, d, false).filter(|e| e.len() > MIN_RECORDS);
    let inside = record_ends(window, d, true).filter(|e| e.len() > MIN_RECORDS);
    let ends = match (out, inside) {
        (Some(e), None) | (None, Some(e)) => e,
        (Some(a), Some(b)) => {
            // Both parse: fine only if they agree on the cut.
            let ca = a.iter().find(|&&e| e >= target).copied();
            let cb = b.iter().find(|&&e| e >= target).copied();
            return if ca == cb { ca } else { None };
        }
        (None, None) => return None,
    };
    // The cut must leave whole records on both sides within the window.
    let cut = ends.iter().copied().find(|&e| e >= target)?;
    (cut < window.len()).then_some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect(columns: usize) -> Dialect {
        Dialect {
            rules: CsvRules {
                delimiter: b',',
                quote: b'"',
                escape: None,
                comment: None,
            },
            columns,
            lines: false,
        }
    }

    fn rows(n: usize, newline_every: usize) -> String {
        let mut s = String::new();
        for i in 0..n {
            if i % newline_every == 0 {
                s.push_str(&format!("{i},\"multi\nline, \"\"q\"\"\",x\n"));
            } else {
                s.push_str(&format!("{i},\"plain, text\",y\n"));
            }
        }
        s
    }

    #[test]
    fn cut_lands_on_a_record_start_even_inside_quotes() {
        let data = rows(200, 3);
        let bytes = data.as_bytes();
        for target in [10usize, 777, 1500, 2999] {
            let cut = aligned_cut(bytes, target, &dialect(3)).expect("a cut");
            assert!(cut >= target);
            // The cut is at the start of a line whose first field is a row number.
            let rest = &data[cut..];
            let first_field = rest.split(',').next().unwrap_or("");
            assert!(
                first_field.parse::<usize>().is_ok(),
                "cut at {cut}: {:?}",
                &rest[..20]
            );
            assert_eq!(&bytes[cut - 1..cut], b"\n");
        }
    }

    #[test]
    fn a_window_starting_inside_quotes_is_recognised() {
        let data = rows(200, 2);
        // Start the window in the middle of a quoted value that holds a line break.
        let start = data.find("multi\n").expect("multi") + 2;
        let window = &data.as_bytes()[start..];
        let cut = aligned_cut(window, 0, &dialect(3)).expect("a cut");
        assert!(window[..cut].ends_with(b"\n"));
        let rest = std::str::from_utf8(&window[cut..]).expect("utf8");
        assert!(
            rest.split(',')
                .next()
                .unwrap_or("")
                .parse::<usize>()
                .is_ok(),
            "{rest:.30}"
        );
    }

    #[test]
    fn stray_quotes_inside_fields_stop_the_cut() {
        let data = "1,a 5\" screen,x\n".repeat(50);
        assert_eq!(aligned_cut(data.as_bytes(), 100, &dialect(3)), None);
    }

    #[test]
    fn ambiguous_or_dirty_windows_are_not_cut() {
        // One column: every hypothesis parses.
        let one = "a\nb\nc\nd\ne\nf\ng\n".repeat(10);
        assert_eq!(aligned_cut(one.as_bytes(), 5, &dialect(1)), None);
        // Wrong field counts everywhere.
        let dirty = "1,2\n1,2,3\n1\n".repeat(20);
        assert_eq!(aligned_cut(dirty.as_bytes(), 5, &dialect(3)), None);
    }

    /// Record starts found by reading the whole text from the beginning.
    fn true_starts(data: &[u8]) -> std::collections::HashSet<usize> {
        let mut starts = std::collections::HashSet::new();
        let mut in_quote = false;
        for (i, &b) in data.iter().enumerate() {
            if b == b'"' {
                in_quote = !in_quote;
            } else if b == b'\n' && !in_quote {
                starts.insert(i + 1);
            }
        }
        starts
    }

    // Property: over many seeded random files and cut targets, every cut that is made is a
    // true record start.
    #[test]
    fn every_cut_is_a_true_record_start() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut cuts = 0;
        for _ in 0..40 {
            let mut data = String::new();
            let rows = 200 + (next() % 300) as usize;
            for i in 0..rows {
                let text = match next() % 4 {
                    0 => "\"two\nlines, \"\"q\"\"\"".to_string(),
                    1 => "\"a\r\nb\"".to_string(),
                    2 => format!("plain{}", next() % 100),
                    _ => "\"\"".to_string(),
                };
                data.push_str(&format!("{i},{text},{}\r\n", next() % 7));
            }
            let bytes = data.as_bytes();
            let truth = true_starts(bytes);
            for _ in 0..20 {
                let from = (next() as usize) % bytes.len();
                let window = &bytes[from..(from + 4096).min(bytes.len())];
                let target = (next() as usize) % window.len();
                if let Some(cut) = aligned_cut(window, target, &dialect(3)) {
                    cuts += 1;
                    assert!(
                        truth.contains(&(from + cut)),
                        "cut {} is not a record start",
                        from + cut
                    );
                    assert!(cut >= target);
                }
            }
        }
        assert!(cuts > 300, "too few cuts were made: {cuts}");
    }
}
