//! Each CSV file's dialect, detected from the start of the file while it is sampled:
//! delimiter, quote, escape and comment characters, the lines before the header (a title, a
//! `sep=;` line as Excel writes it) and whether the first row is a header.
//!
//! **Consistency of field counts decides.** Each candidate dialect frames the sample into
//! records (csv-core, as the reader will); the most common field count over the later
//! records is the file's width, the records before the first one of that width are its
//! preamble, and the candidate's score is how many records have that width. The highest
//! score wins; ties go to the earlier candidate (the comma, or the tab for `.tsv` files,
//! first), and a candidate must split rows into at least two fields to beat the default.
//! Candidates are only tried when their characters occur in the sample, so a plain comma
//! file costs one framing.
//!
//! **A delimiter after the last value** of every row (spreadsheet exports write them) is no
//! column: when the rows are one field wider than the header and that field is always
//! blank in the sample, or the header alone ends with a delimiter, the file reads with the
//! header's columns and a blank last field is dropped from every row that has one (a value
//! there makes the row too wide: rejected, never dropped).
//!
//! **A header one field short** of rows whose last field is never blank names every column
//! but the first, as R writes row names: the first column reads as `column_1`.
//!
//! **The header** is decided by types: a column whose later values are all numbers, dates
//! or booleans and whose first value is not makes the first row a header; a first row whose
//! values have the types of the rows below is data. When every column is text the types
//! cannot tell: the first row is taken as the header, and the guess says so.
//!
//! An option the user gives (`--delimiter`, `--quote`, `--escape`, `--comment`,
//! `--no-header`/`header`, `--skip-rows`) fixes that aspect and is never second-guessed.

use super::framer::each_record;
use crate::storage::format::{CsvOptions, CsvRules};

/// Bytes of a file's start the detection looks at.
pub const DETECT_BYTES: usize = 64 << 10;

/// Records of the sample the detection frames.
const DETECT_RECORDS: usize = 200;

/// Most records before the header taken as a preamble.
const MAX_PREAMBLE: usize = 20;

/// Delimiters tried, after the default one, in this order.
const DELIMITERS: [u8; 5] = [b',', b';', b'\t', b'|', b':'];

/// What the user fixed (`None`: detect it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fixed {
    /// The field delimiter.
    pub delimiter: Option<u8>,
    /// The quote character.
    pub quote: Option<u8>,
    /// The escape character (`Some(None)`: none).
    pub escape: Option<Option<u8>>,
    /// The comment prefix (`Some(None)`: none).
    pub comment: Option<Option<u8>>,
    /// Whether the first row is a header.
    pub header: Option<bool>,
    /// Records before the header.
    pub skip: Option<usize>,
}

impl Fixed {
    /// What detection must keep for file `path`: what `csv` gives, and with its `detect`
    /// off everything (the defaults where nothing is given).
    pub fn of(csv: &CsvOptions, path: &str) -> Fixed {
        let all = !csv.detect;
        Fixed {
            delimiter: csv.delimiter.or(all.then(|| csv.delimiter_for(path))),
            quote: csv.quote.or(all.then_some(b'"')),
            escape: csv.escape.map(Some).or(all.then_some(None)),
            comment: csv.comment.map(Some).or(all.then_some(None)),
            header: csv.header.or(all.then_some(true)),
            skip: csv.skip_rows.or(all.then_some(0)),
        }
    }
}

/// A file's dialect as detected (or given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialect {
    /// How records and fields are framed.
    pub rules: CsvRules,
    /// The first record after the preamble is a header.
    pub header: bool,
    /// Records before the header (or the first row).
    pub skip: usize,
    /// Bytes of those records.
    pub preamble: u64,
    /// Fields per record.
    pub columns: usize,
    /// Rows end with a delimiter: a blank field past the last column is dropped.
    pub trailing: bool,
    /// Fields of a data record as written (`columns + 1` where the rows end with a
    /// delimiter).
    pub row_fields: usize,
    /// The header names every column but the first (R's row names).
    pub unnamed_first: bool,
    /// Why the detection is not sure (`None`: it is).
    pub doubt: Option<String>,
}

impl Dialect {
    /// The dialect in a few words: `';' delimited, '"' quoted, header, 2 lines skipped`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} delimited", shown(self.rules.delimiter))];
        if self.rules.quote != b'"' {
            parts.push(format!("{} quoted", shown(self.rules.quote)));
        }
        if let Some(e) = self.rules.escape {
            parts.push(format!("{} escaped", shown(e)));
        }
        if let Some(c) = self.rules.comment {
            parts.push(format!("{} comments", shown(c)));
        }
        if self.trailing {
            parts.push("rows end with a delimiter".to_string());
        }
        parts.push(if self.header { "header" } else { "no header" }.to_string());
        if self.unnamed_first {
            parts.push("naming all but the first column".to_string());
        }
        if self.skip > 0 {
            parts.push(format!(
                "{} line{} before it skipped",
                self.skip,
                if self.skip == 1 { "" } else { "s" }
            ));
        }
        parts.join(", ")
    }
}

/// A character as the user would write it (`tab` for a tab).
pub fn shown(c: u8) -> String {
    match c {
        b'\t' => "tab".to_string(),
        c => format!("'{}'", c as char),
    }
}

/// One candidate framing of the sample: each record's field count and end.
struct Framing {
    rules: CsvRules,
    /// Each record's field count, a trailing blank field left out where rows end with a
    /// delimiter.
    counts: Vec<usize>,
    ends: Vec<usize>,
    /// The width: the most common field count of the later records.
    width: usize,
    /// Rows end with a delimiter (see [`trailing_delimiter`]).
    trailing: bool,
    /// The most common field count as written.
    row_fields: usize,
    /// The record before the first row is one field short and the rows' last field is never
    /// blank: a header without a name for the first column.
    unnamed_first: bool,
    /// Records before the first one of that width.
    skip: usize,
    /// Records of that width from `skip` on.
    score: usize,
}

impl Framing {
    fn of(sample: &[u8], complete: bool, rules: CsvRules, skip: Option<usize>) -> Framing {
        let (mut counts, ends, blank) = frame(sample, complete, rules);
        let n = counts.len();
        // The width by the later half of the records (a preamble sits at the start).
        let later = &counts[n / 2..];
        let row_fields = mode(later).unwrap_or(1);
        let trailing = trailing_delimiter(&counts, &blank, row_fields);
        let unnamed_first = trailing.is_none() && unnamed_first(&counts, &blank, row_fields);
        let width = trailing.unwrap_or(row_fields);
        if trailing.is_some() {
            for (c, b) in counts.iter_mut().zip(&blank) {
                if *b && *c == width + 1 {
                    *c = width;
                }
            }
        }
        // A preamble is a few lines of another width (a title has one field, or far fewer
        // than a row, or a comma in its text): a header one field short of its rows is no
        // preamble (see `detect` for a line wider than the rows).
        let skip = skip.unwrap_or_else(|| {
            for (i, c) in counts.iter().take(MAX_PREAMBLE + 1).enumerate() {
                if *c == width {
                    return i;
                }
                if !(*c == 1 || c * 2 < width || *c > width) {
                    return 0;
                }
            }
            0
        });
        let score = counts.iter().skip(skip).filter(|c| **c == width).count();
        Framing {
            rules,
            counts,
            ends,
            width,
            trailing: trailing.is_some(),
            row_fields,
            unnamed_first,
            skip,
            score,
        }
    }

    /// Records from the preamble on whose width is the file's, as a share.
    fn consistency(&self) -> f64 {
        let n = self.counts.len().saturating_sub(self.skip);
        if n == 0 {
            return 0.0;
        }
        self.score as f64 / n as f64
    }

    /// How good the framing is: the records of the file's width, then the fewest others
    /// (a comment line that is no row costs a framing without the comment prefix).
    fn rank(&self) -> (usize, std::cmp::Reverse<usize>) {
        let others = self.counts.len().saturating_sub(self.skip) - self.score;
        (self.score, std::cmp::Reverse(others))
    }

    /// Splits rows into fields consistently enough to be taken.
    fn plausible(&self) -> bool {
        self.width >= 2 && self.consistency() >= 0.9
    }
}

/// The field count and end offset of each whole record of `sample`, as `rules` frame it
/// (at most [`DETECT_RECORDS`]), and whether its last field is blank; a last record without
/// its line break counts only when the sample is the whole file.
fn frame(sample: &[u8], complete: bool, rules: CsvRules) -> (Vec<usize>, Vec<usize>, Vec<bool>) {
    let (mut counts, mut offsets, mut blank) = (Vec::new(), Vec::new(), Vec::new());
    each_record(sample, complete, rules, |r| {
        counts.push(r.width());
        offsets.push(r.end);
        blank.push(r.width() > 1 && r.fields().last().is_some_and(is_blank));
        counts.len() < DETECT_RECORDS
    });
    (counts, offsets, blank)
}

/// A value of nothing but white space (a line break in quotes, as some exports end rows).
pub(crate) fn is_blank(v: &[u8]) -> bool {
    v.iter().all(u8::is_ascii_whitespace)
}

/// The record that can only be a header of another width: the one just before the first
/// record of `row_fields` fields, with nothing but title lines before it and (nearly) every
/// record after it of that width. `None` in any other file: one row too wide among rows is
/// a bad row, not a layout.
fn header_before_rows(counts: &[usize], row_fields: usize) -> Option<usize> {
    let first = counts.iter().position(|c| *c == row_fields)?;
    let header = first.checked_sub(1)?;
    let titles = counts[..header]
        .iter()
        .all(|c| *c == 1 || c * 2 < row_fields);
    let rows = &counts[first..];
    let wide = rows.iter().filter(|c| **c == row_fields).count();
    (titles && wide as f64 >= 0.9 * rows.len() as f64).then_some(header)
}

/// Whether the record before the first of `row_fields` fields is one field short while no
/// row's last field is blank (R's row names: the header leaves the first column unnamed).
fn unnamed_first(counts: &[usize], blank: &[bool], row_fields: usize) -> bool {
    let Some(header) = header_before_rows(counts, row_fields) else {
        return false;
    };
    row_fields >= 3
        && counts[header] + 1 == row_fields
        && counts
            .iter()
            .zip(blank)
            .filter(|(c, _)| **c == row_fields)
            .all(|(_, b)| !*b)
}

/// The file's width when its rows end with a delimiter (`row_fields`: the most common field
/// count as written; `blank`: each record's last field is blank), `None` when they do not.
/// Two shapes say so: the rows are one field wider than the record before the first of
/// them (the header) and that field is blank in every one of them, or that record alone is
/// one field wider with a blank last field (a header ending in a delimiter). A blank last
/// column under a header that names it is a column.
fn trailing_delimiter(counts: &[usize], blank: &[bool], row_fields: usize) -> Option<usize> {
    let header = header_before_rows(counts, row_fields)?;
    let rows_blank = counts
        .iter()
        .zip(blank)
        .filter(|(c, _)| **c == row_fields)
        .all(|(_, b)| *b);
    if row_fields >= 3 && counts[header] + 1 == row_fields && rows_blank {
        return Some(row_fields - 1);
    }
    if row_fields >= 2 && counts[header] == row_fields + 1 && blank[header] {
        return Some(row_fields);
    }
    None
}

/// The most common value (the larger on a tie).
fn mode(values: &[usize]) -> Option<usize> {
    let mut seen: Vec<(usize, usize)> = Vec::new();
    for v in values {
        match seen.iter_mut().find(|(k, _)| k == v) {
            Some((_, n)) => *n += 1,
            None => seen.push((*v, 1)),
        }
    }
    seen.into_iter()
        .max_by_key(|(k, n)| (*n, *k))
        .map(|(k, _)| k)
}

/// Whether `byte` starts a field somewhere in `sample` (after a delimiter or a line break,
/// or at the start).
fn starts_a_field(sample: &[u8], byte: u8) -> bool {
    memchr::memchr_iter(byte, sample)
        .take(10_000)
        .any(|i| i == 0 || matches!(sample[i - 1], b',' | b';' | b'\t' | b'|' | b'\n'))
}

/// Detects the dialect of a file from `sample`, its first bytes (`complete`: the whole
/// file), with what `fixed` fixes; `default_delimiter` is tried first.
pub fn detect(sample: &[u8], complete: bool, fixed: &Fixed, default_delimiter: u8) -> Dialect {
    let sample = &sample[..sample.len().min(DETECT_BYTES)];
    let complete = complete && sample.len() < DETECT_BYTES;
    // Excel's `sep=;` first line names the delimiter and is no record.
    let (sep, sep_len) = match sample.strip_prefix(b"sep=") {
        Some(rest) if rest.len() >= 2 && matches!(rest[1], b'\n' | b'\r') => {
            // `sep=`, the character, its line break (`\r\n` is two bytes).
            let len = 6 + usize::from(rest[1] == b'\r' && rest.get(2) == Some(&b'\n'));
            (Some(rest[0]), len)
        }
        _ => (None, 0),
    };
    let body = &sample[sep_len..];
    let delimiters: Vec<u8> = match fixed.delimiter.or(sep) {
        Some(d) => vec![d],
        None => std::iter::once(default_delimiter)
            .chain(DELIMITERS)
            .filter(|d| *d == default_delimiter || memchr::memchr(*d, body).is_some())
            .fold(Vec::new(), |mut v, d| {
                if !v.contains(&d) {
                    v.push(d);
                }
                v
            }),
    };
    let quotes: Vec<u8> = match fixed.quote {
        Some(q) => vec![q],
        None if starts_a_field(body, b'\'') => vec![b'"', b'\''],
        None => vec![b'"'],
    };
    let comments: Vec<Option<u8>> = match fixed.comment {
        Some(c) => vec![c],
        None if body.starts_with(b"#") || memchr::memmem::find(body, b"\n#").is_some() => {
            vec![None, Some(b'#')]
        }
        None => vec![None],
    };
    let mut best: Option<Framing> = None;
    // Each plausible candidate's delimiter and score, to name a rival as good as the best.
    let mut tried: Vec<(u8, (usize, std::cmp::Reverse<usize>))> = Vec::new();
    for &delimiter in &delimiters {
        for &quote in &quotes {
            let escapes: Vec<Option<u8>> = match fixed.escape {
                Some(e) => vec![e],
                None if memchr::memmem::find(body, &[b'\\', quote]).is_some() => {
                    vec![Some(b'\\'), None]
                }
                None => vec![None],
            };
            for &escape in &escapes {
                for &comment in &comments {
                    let rules = CsvRules {
                        delimiter,
                        quote,
                        escape,
                        comment,
                    };
                    let f = Framing::of(body, complete, rules, fixed.skip);
                    if f.plausible() {
                        tried.push((delimiter, f.rank()));
                    }
                    let better = match &best {
                        None => true,
                        Some(b) => f.plausible() && (!b.plausible() || f.rank() > b.rank()),
                    };
                    if better {
                        best = Some(f);
                    }
                }
            }
        }
    }
    let best = best.expect("at least one candidate");
    let mut doubts = Vec::new();
    let rival = tried
        .iter()
        .find(|(d, rank)| best.plausible() && *d != best.rules.delimiter && *rank == best.rank())
        .map(|(d, _)| *d);
    if let Some(r) = rival {
        doubts.push(format!(
            "{} splits the first rows as consistently as {}",
            shown(r),
            shown(best.rules.delimiter)
        ));
    }
    if fixed.delimiter.is_none() && best.counts.len() > best.skip + 1 && best.consistency() < 0.9 {
        doubts.push(format!(
            "only {} of {} rows have {} fields",
            best.score,
            best.counts.len() - best.skip,
            best.width
        ));
    }
    let mut skip = best.skip;
    // A line wider than the rows before them is a title holding the delimiter when the
    // rows start with a header, and otherwise the header of a file whose rows are short.
    if fixed.skip.is_none() && skip > 0 && best.counts[skip - 1] > best.width {
        let start = best.ends[skip - 1];
        let (header, _) = header_of(&body[start..], complete, best.rules);
        if !header {
            skip -= 1;
        }
    }
    let preamble = sep_len
        + if skip == 0 {
            0
        } else {
            best.ends.get(skip - 1).copied().unwrap_or(0)
        };
    let header = match fixed.header {
        Some(h) => h,
        None => {
            let (header, doubt) = header_of(&body[preamble - sep_len..], complete, best.rules);
            doubts.extend(doubt);
            header
        }
    };
    Dialect {
        rules: best.rules,
        header,
        skip: skip + usize::from(sep.is_some()),
        preamble: preamble as u64,
        columns: best.width,
        trailing: best.trailing,
        row_fields: best.row_fields,
        unnamed_first: header && best.unnamed_first && best.skip == skip,
        doubt: (!doubts.is_empty()).then(|| doubts.join("; ")),
    }
}

/// What a value looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Empty,
    Int,
    Float,
    Bool,
    Date,
    Text,
}

fn shape(v: &[u8]) -> Shape {
    let v = v.trim_ascii();
    if v.is_empty() {
        return Shape::Empty;
    }
    let digits = v.strip_prefix(b"-").or(v.strip_prefix(b"+")).unwrap_or(v);
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        return Shape::Int;
    }
    let Ok(text) = std::str::from_utf8(v) else {
        return Shape::Text;
    };
    if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false") {
        return Shape::Bool;
    }
    if is_date(v) || is_time(v) {
        return Shape::Date;
    }
    if text.bytes().any(|b| b.is_ascii_digit()) && text.parse::<f64>().is_ok() {
        return Shape::Float;
    }
    let unsigned = text.trim_start_matches(['-', '+']);
    if ["nan", "inf", "infinity"]
        .iter()
        .any(|w| unsigned.eq_ignore_ascii_case(w))
    {
        return Shape::Float;
    }
    Shape::Text
}

/// Digit groups of `v` split at `sep`, each 1 to 4 digits long (`None` otherwise).
fn digit_groups(v: &[u8], sep: u8) -> Option<Vec<usize>> {
    v.split(|b| *b == sep)
        .map(|g| {
            ((1..=4).contains(&g.len()) && g.iter().all(u8::is_ascii_digit)).then_some(g.len())
        })
        .collect()
}

/// A date as written in exports: `2024-01-31` (and a time after it), `31/01/2024`,
/// `1/31/2024`, `31.01.24`, `2024/01/31`.
fn is_date(v: &[u8]) -> bool {
    let day = v.split(|b| *b == b' ' || *b == b'T').next().unwrap_or(v);
    [b'-', b'/', b'.'].iter().any(|&sep| {
        matches!(
            digit_groups(day, sep).as_deref(),
            Some([4, 1..=2, 1..=2]) | Some([1..=2, 1..=2, 2 | 4])
        )
    })
}

/// A time of day: `13:45`, `1:00:00`, `13:45:10.5`.
fn is_time(v: &[u8]) -> bool {
    let whole = v.split(|b| *b == b'.').next().unwrap_or(v);
    matches!(
        digit_groups(whole, b':').as_deref(),
        Some([1..=2, 2]) | Some([1..=2, 2, 2])
    )
}

/// Whether `value` fits a column of shape `column`.
fn fits(value: Shape, column: Shape) -> bool {
    value == Shape::Empty || value == column || (column == Shape::Float && value == Shape::Int)
}

/// The shape a column's values share (`Text` when they share none): `column`, the shape
/// of the values before, widened by `value`. Text stays text, so `value` is not looked at
/// then (the costly shapes to tell are text's).
fn widen(column: Shape, value: &[u8]) -> Shape {
    if column == Shape::Text {
        return Shape::Text;
    }
    match (column, shape(value)) {
        (s, Shape::Empty) => s,
        (Shape::Empty, v) => v,
        (a, b) if a == b => a,
        (Shape::Int, Shape::Float) | (Shape::Float, Shape::Int) => Shape::Float,
        _ => Shape::Text,
    }
}

/// Whether the first record of `data` is a header, by the types of the records below it
/// (up to [`DETECT_RECORDS`] records in all), and why that is a guess when it is.
fn header_of(data: &[u8], complete: bool, rules: CsvRules) -> (bool, Option<String>) {
    let mut first: Option<Vec<Vec<u8>>> = None;
    // The shape each of the first record's columns has below it.
    let mut columns: Vec<Shape> = Vec::new();
    let mut records = 0;
    each_record(data, complete, rules, |r| {
        records += 1;
        match &first {
            None => {
                let fields: Vec<Vec<u8>> = r.fields().map(<[u8]>::to_vec).collect();
                columns = vec![Shape::Empty; fields.len()];
                first = Some(fields);
            }
            Some(_) => {
                for (column, value) in columns.iter_mut().zip(r.fields()) {
                    *column = widen(*column, value);
                }
            }
        }
        records < DETECT_RECORDS
    });
    let Some(first) = first else {
        return (true, None);
    };
    if records < 2 {
        return (true, None);
    }
    let (mut header, mut data_row) = (false, false);
    for (value, &column) in first.iter().zip(&columns) {
        if matches!(column, Shape::Text | Shape::Empty) {
            continue;
        }
        let own = shape(value);
        if fits(own, column) {
            if own != Shape::Empty {
                data_row = true;
            }
        } else {
            header = true;
        }
    }
    if header {
        (true, None)
    } else if data_row {
        (false, None)
    } else {
        (
            true,
            Some(
                "every column is text, so the first row was taken as the header (--no-header \
                 if it is data)"
                    .to_string(),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect_all(text: &str) -> Dialect {
        detect(text.as_bytes(), true, &Fixed::default(), b',')
    }

    #[test]
    fn delimiters_are_found_by_consistent_field_counts() {
        for (text, delimiter) in [
            ("a,b,c\n1,2,3\n4,5,6\n", b','),
            ("a;b;c\n1,5;2;3\n4;5,25;6\n", b';'),
            ("a\tb\n1\tx y\n2\tz\n", b'\t'),
            ("a|b\n1|x\n2|y\n", b'|'),
        ] {
            let d = detect_all(text);
            assert_eq!(d.rules.delimiter, delimiter, "{text:?}: {d:?}");
            assert!(d.header, "{text:?}");
            assert_eq!(d.doubt, None, "{text:?}");
        }
    }

    #[test]
    fn semicolons_inside_quotes_do_not_switch_a_comma_file() {
        let mut text = String::from("id,note\n");
        for i in 0..50 {
            text.push_str(&format!("{i},\"a; b; c; {i}\"\n"));
        }
        let d = detect_all(&text);
        assert_eq!(d.rules.delimiter, b',');
        assert_eq!(d.columns, 2);
    }

    #[test]
    fn headers_are_told_from_data_by_types() {
        let d = detect_all("1,2024-01-01,x\n2,2024-01-02,y\n3,2024-01-03,z\n");
        assert!(!d.header, "{d:?}");
        let d = detect_all("id,day,name\n1,2024-01-01,x\n2,2024-01-02,y\n");
        assert!(d.header, "{d:?}");
        let d = detect_all("name,city\nann,oslo\nbob,rome\n");
        assert!(d.header);
        assert!(d.doubt.expect("a guess").contains("every column is text"));
    }

    #[test]
    fn title_lines_and_excel_sep_lines_are_skipped() {
        let text = "Sales report\nGenerated 2024-01-01\nid;amount\n1;2,5\n2;3\n3;4\n";
        let d = detect_all(text);
        assert_eq!(
            (d.rules.delimiter, d.skip, d.header),
            (b';', 2, true),
            "{d:?}"
        );
        assert_eq!(
            &text[d.preamble as usize..d.preamble as usize + 9],
            "id;amount"
        );
        let text = "sep=|\r\nid|name\r\n1|a\r\n2|b\r\n";
        let d = detect_all(text);
        assert_eq!((d.rules.delimiter, d.skip), (b'|', 1), "{d:?}");
        assert_eq!(
            &text[d.preamble as usize..d.preamble as usize + 7],
            "id|name"
        );
    }

    #[test]
    fn quotes_escapes_and_comments_are_found() {
        let d = detect_all("id,name\n1,'a, b'\n2,'c, d'\n3,'e'\n");
        assert_eq!(d.rules.quote, b'\'', "{d:?}");
        let d = detect_all("id,text\n1,\"say \\\"hi, there\\\"\"\n2,\"x\"\n3,\"y\"\n");
        assert_eq!(d.rules.escape, Some(b'\\'), "{d:?}");
        let d = detect_all("id,v\n1,2\n# a note, with, commas\n3,4\n5,6\n");
        assert_eq!(d.rules.comment, Some(b'#'), "{d:?}");
        // A '#' in a header that fits is no comment.
        let d = detect_all("#id,v\n1,2\n3,4\n");
        assert_eq!(d.rules.comment, None, "{d:?}");
        assert!(d.header);
    }

    #[test]
    fn what_the_user_gives_is_kept() {
        let fixed = Fixed {
            delimiter: Some(b','),
            header: Some(false),
            ..Fixed::default()
        };
        let d = detect(b"a;b\nx;y\n", true, &fixed, b',');
        assert_eq!((d.rules.delimiter, d.header), (b',', false));
    }

    #[test]
    fn a_single_column_stays_one_column() {
        let d = detect_all("name\nann\nbob\n");
        assert_eq!((d.rules.delimiter, d.columns), (b',', 1));
        let d = detect(b"x\ty\n1\t2\n", true, &Fixed::default(), b'\t');
        assert_eq!(d.rules.delimiter, b'\t');
    }

    #[test]
    fn wide_files_are_framed_whole() {
        // More fields than the framer's first buffers hold.
        let header: Vec<String> = (0..3000).map(|i| format!("c{i}")).collect();
        let row: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
        let text = format!(
            "{}\n{}\n{}\n",
            header.join(";"),
            row.join(";"),
            row.join(";")
        );
        let d = detect_all(&text);
        assert_eq!((d.rules.delimiter, d.columns, d.header), (b';', 3000, true));
    }

    #[test]
    fn a_delimiter_ending_every_row_is_no_column() {
        // Rows one field wider than the header, the extra field always blank.
        let d = detect_all("id,name,amount\n1,a,2.5,\n2,b,3.5,\n3,c,4,\n");
        assert_eq!(
            (d.columns, d.trailing, d.row_fields, d.header),
            (3, true, 4, true)
        );
        assert_eq!(d.doubt, None, "{d:?}");
        // The blank field may be a quoted line break (as some exports end their rows).
        let d = detect_all("\"a\";\"b\"\n\"x\";\"1\";\"\n\"\n");
        assert_eq!(
            (d.rules.delimiter, d.columns, d.trailing),
            (b';', 2, true),
            "{d:?}"
        );
        // A header alone ending with a delimiter.
        let d = detect_all("id,v,\n1,2\n3,4\n5,6\n");
        assert_eq!((d.columns, d.trailing, d.row_fields), (2, true, 2), "{d:?}");
        // A blank last column the header names is a column.
        let d = detect_all("id,v,note\n1,2,\n3,4,\n");
        assert_eq!((d.columns, d.trailing), (3, false), "{d:?}");
        // Without a header one short, rows that all end blank keep their last column.
        let d = detect_all("1,2,\n3,4,\n5,6,\n");
        assert_eq!((d.columns, d.trailing), (3, false), "{d:?}");
    }

    #[test]
    fn a_header_one_short_of_filled_rows_leaves_the_first_column_unnamed() {
        let d = detect_all("\"x\",\"y\"\n\"r1\",1,2\n\"r2\",3,4\n\"r3\",5,6\n");
        assert_eq!(
            (d.columns, d.unnamed_first, d.trailing, d.header),
            (3, true, false, true),
            "{d:?}"
        );
        assert!(d.describe().contains("naming all but the first column"));
    }

    #[test]
    fn a_title_holding_the_delimiter_is_a_preamble_but_a_wide_header_is_not() {
        let text = "Created as New Dataset,Sample 022, February 11 2017\ncm-1,%T\n4000.00,98.78\n3999.00,98.79\n3998.00,98.78\n";
        let d = detect_all(text);
        assert_eq!((d.skip, d.columns, d.header), (1, 2, true), "{d:?}");
        assert!(text[d.preamble as usize..].starts_with("cm-1,%T"));
        // A header naming more columns than the rows fill stays the header.
        let d = detect_all("id,score,extra\n1,2.5\n2,3.5\n3,4.5\n");
        assert_eq!((d.skip, d.header), (0, true), "{d:?}");
    }

    #[test]
    fn dates_times_and_nan_as_exports_write_them_are_typed() {
        let d =
            detect_all("2/28/2008,1:00:00,NaN\n2/28/2008,2:00:00,NaN\n2/28/2008,3:00:00,81.5\n");
        assert_eq!((d.rules.delimiter, d.header), (b',', false), "{d:?}");
        let d = detect_all("date,time,humidity\n2/28/2008,1:00:00,NaN\n2/28/2008,2:00:00,80\n");
        assert!(d.header, "{d:?}");
        for (v, s) in [
            ("31.01.2024", Shape::Date),
            ("2024/01/31", Shape::Date),
            ("13:45:10.5", Shape::Date),
            ("-inf", Shape::Float),
            ("1.2.3", Shape::Text),
            ("10.0.0.1", Shape::Text),
            ("1.5", Shape::Float),
        ] {
            assert_eq!(shape(v.as_bytes()), s, "{v}");
        }
    }

    #[test]
    fn timestamps_do_not_make_colons_a_delimiter() {
        let d = detect_all("1,2024-01-01 12:30:00\n2,2024-01-01 13:45:10\n");
        assert_eq!(d.rules.delimiter, b',', "{d:?}");
        assert!(!d.header);
    }
}
