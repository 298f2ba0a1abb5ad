//! One framer of CSV and NDJSON records, shared by everything that needs record
//! boundaries: the scan (the ledger's record count, the record size limit), the schema
//! sampler (where a sample of N records ends) and the byte-range splitter (where in a window
//! of unknown quote state records start: [`RecordScan::strict_line_ends`], read once from
//! each quote state). It follows csv-core, the parser underneath arrow's CSV decoder, so
//! every part of sluice agrees with the decoder on where a record ends; the dialect is one
//! [`CsvRules`] value throughout.

/// Frames records as the decoder will: the record count of the ledger (counted here,
/// independently of the decoder) and the record boundaries that catch a record longer than
/// the limit before it is held in memory. For CSV it follows csv-core's rules: a quote opens
/// a quoted field only at the start of a field (`5" screen` is literal text), a doubled quote
/// or the escape character inside quotes is part of the value, `\r` and `\n` end a record,
/// empty lines and comment lines are no records. NDJSON records are lines holding more than
/// white space.
#[derive(Debug, Clone)]
pub(crate) struct RecordScan {
    csv: Option<CsvRules>,
    state: ScanState,
    /// Global offset of the next byte to scan.
    pub(crate) pos: u64,
    /// Global offset where the current record starts.
    pub(crate) record_start: u64,
    /// Global offset just past the last byte of content seen (NDJSON: not white space).
    content_end: u64,
    /// The byte before `pos` (a quote after a delimiter opens a quoted field).
    prev: u8,
    /// Records framed so far.
    pub(crate) records: u64,
    /// Where each framed record's content ends, for records not yet matched with decoded
    /// rows (see [`RecordScan::take_upto`]).
    pub(crate) ends: std::collections::VecDeque<u64>,
    /// Where each of those records starts (the same records as `ends`).
    pub(crate) starts: std::collections::VecDeque<u64>,
}

pub(crate) use crate::storage::format::CsvRules;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    /// At the start of a record.
    RecordStart,
    /// At the start of a field (after a delimiter).
    FieldStart,
    /// Inside an unquoted field (NDJSON: inside a line with content).
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// Just after the escape character inside quotes.
    Escaped,
    /// Just after a quote inside a quoted field: a doubled quote or the field's end.
    QuoteInQuoted,
    /// Inside a comment line.
    Comment,
}

impl RecordScan {
    /// A framer of CSV records starting at global offset `start` (a record start).
    pub(crate) fn csv(rules: CsvRules, start: u64) -> Self {
        RecordScan::new(Some(rules), start)
    }

    /// A framer of NDJSON records (lines with content) starting at `start`.
    pub(crate) fn ndjson(start: u64) -> Self {
        RecordScan::new(None, start)
    }

    fn new(csv: Option<CsvRules>, start: u64) -> Self {
        RecordScan {
            csv,
            state: ScanState::RecordStart,
            pos: start,
            record_start: start,
            content_end: start,
            prev: b'\n',
            records: 0,
            ends: std::collections::VecDeque::new(),
            starts: std::collections::VecDeque::new(),
        }
    }

    /// A framer of CSV records whose first byte lies inside a quoted field (a window cut
    /// at an unknown place, read under that hypothesis).
    pub(crate) fn csv_in_quotes(rules: CsvRules, start: u64) -> Self {
        let mut scan = RecordScan::csv(rules, start);
        scan.state = ScanState::Quoted;
        scan
    }

    /// Frames `window` strictly, as a clean file with `columns` columns reads: the offsets
    /// (into `window`) just after each line feed that ends a line outside quotes, or `None`
    /// when the text breaks a rule such a file keeps — a record (after the first, which the
    /// window may cut) with another number of fields, a quote inside an unquoted field, or
    /// text after a closing quote. csv-core reads those leniently; a window that holds them
    /// is no evidence of where records start. NDJSON framers return `None`.
    pub(crate) fn strict_line_ends(mut self, window: &[u8], columns: usize) -> Option<Vec<usize>> {
        use ScanState::*;
        let rules = self.csv?;
        let mut fields = 1usize;
        let mut first = true;
        let mut ends = Vec::new();
        for (i, &b) in window.iter().enumerate() {
            let term = b == b'\n' || b == b'\r';
            match self.state {
                Unquoted if b == rules.quote => return None,
                QuoteInQuoted if !(term || b == rules.delimiter || b == rules.quote) => {
                    return None
                }
                RecordStart | FieldStart | Unquoted | QuoteInQuoted if b == rules.delimiter => {
                    fields += 1
                }
                _ => {}
            }
            let records = self.records;
            let ended = self.take(b);
            if self.records > records && !first && fields != columns {
                return None;
            }
            if ended {
                first = false;
                fields = 1;
                if b == b'\n' {
                    ends.push(i + 1);
                }
            }
        }
        Some(ends)
    }

    /// Scans `bytes` until a record grows past `max`: returns the index of that byte.
    pub(crate) fn over(&mut self, bytes: &[u8], max: u64) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            if self.pos - self.record_start >= max {
                return Some(i);
            }
            let room = (max - (self.pos - self.record_start)) as usize;
            // Jump over bytes that cannot change the state.
            let rest = &bytes[i..];
            let skip = match (self.csv, self.state) {
                (None, ScanState::Unquoted) => memchr::memchr(b'\n', rest),
                // Delimiters matter only when a quote follows one: jump to the next quote or
                // line end (a field-level jump would stop at every delimiter).
                (Some(r), ScanState::Unquoted) => memchr::memchr3(b'\n', b'\r', r.quote, rest),
                (Some(r), ScanState::Quoted) => match r.escape {
                    Some(e) => memchr::memchr2(r.quote, e, rest),
                    None => memchr::memchr(r.quote, rest),
                },
                (Some(_), ScanState::Comment) => memchr::memchr2(b'\n', b'\r', rest),
                _ => Some(0),
            }
            .unwrap_or(rest.len())
            .min(room);
            if skip > 0 {
                if self.csv.is_none() {
                    // The line's content ends at its last byte that is not white space.
                    if let Some(k) = rest[..skip].iter().rposition(|b| !b.is_ascii_whitespace()) {
                        self.content_end = self.pos + k as u64 + 1;
                    }
                }
                self.prev = rest[skip - 1];
                self.pos += skip as u64;
                i += skip;
                continue;
            }
            self.take(bytes[i]);
            i += 1;
        }
        None
    }

    /// Skips to the end of the current record: the index just past it, if in `bytes`.
    pub(crate) fn end_in(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if self.take(b) {
                return Some(i + 1);
            }
        }
        None
    }

    /// Takes one byte; true when it ends a line (a record, an empty line or a comment).
    fn take(&mut self, b: u8) -> bool {
        let at = self.pos;
        self.pos += 1;
        let (ended, counted) = match self.csv {
            None if b == b'\n' => {
                let counted = self.state == ScanState::Unquoted;
                self.state = ScanState::RecordStart;
                (true, counted)
            }
            None => {
                if !b.is_ascii_whitespace() {
                    self.state = ScanState::Unquoted;
                    self.content_end = at + 1;
                }
                (false, false)
            }
            Some(r) => {
                use ScanState::*;
                let term = b == b'\n' || b == b'\r';
                let (next, ended, counted) = match self.state {
                    RecordStart if term => (RecordStart, true, false),
                    RecordStart if Some(b) == r.comment => (Comment, false, false),
                    RecordStart | FieldStart if b == r.quote => (Quoted, false, false),
                    Unquoted if b == r.quote && self.prev == r.delimiter => (Quoted, false, false),
                    Quoted if Some(b) == r.escape => (Escaped, false, false),
                    Quoted if b == r.quote => (QuoteInQuoted, false, false),
                    Quoted => (Quoted, false, false),
                    Escaped => (Quoted, false, false),
                    QuoteInQuoted if b == r.quote && r.escape.is_none() => (Quoted, false, false),
                    Comment if term => (RecordStart, true, false),
                    Comment => (Comment, false, false),
                    _ if term => (RecordStart, true, true),
                    _ if b == r.delimiter => (FieldStart, false, false),
                    _ => (Unquoted, false, false),
                };
                self.state = next;
                if counted {
                    self.content_end = at;
                }
                (ended, counted)
            }
        };
        self.prev = b;
        if counted {
            self.frame(self.content_end);
        }
        if ended {
            self.record_start = self.pos;
        }
        ended
    }

    /// One more record, its content ending at `end`.
    fn frame(&mut self, end: u64) {
        self.records += 1;
        self.ends.push_back(end);
        self.starts.push_back(self.record_start);
    }

    /// Inside a CSV comment line.
    pub(crate) fn in_comment(&self) -> bool {
        self.csv.is_some() && self.state == ScanState::Comment
    }

    /// The end of the input: a last record without a line break counts too.
    pub(crate) fn finish(&mut self) {
        let (open, end) = match self.csv {
            None => (self.state == ScanState::Unquoted, self.content_end),
            Some(_) => (
                !matches!(self.state, ScanState::RecordStart | ScanState::Comment),
                self.pos,
            ),
        };
        if open {
            self.frame(end);
        }
        self.state = ScanState::RecordStart;
        self.record_start = self.pos;
    }

    /// Framed records whose content ends at or before `offset` and not yet taken.
    pub(crate) fn count_upto(&self, offset: u64) -> u64 {
        self.ends.partition_point(|&e| e <= offset) as u64
    }

    /// Where the first `n` framed records not yet taken start.
    pub(crate) fn starts(&self, n: usize) -> impl Iterator<Item = u64> + '_ {
        self.starts.iter().take(n).copied()
    }

    /// Takes the framed records whose content ends at or before `offset`: their rows have
    /// been decoded.
    pub(crate) fn take_upto(&mut self, offset: u64) -> u64 {
        let n = self.ends.partition_point(|&e| e <= offset);
        self.ends.drain(..n);
        self.starts.drain(..n);
        n as u64
    }
}

/// One record as csv-core frames it: its field values and the offset just past it.
pub(crate) struct Record<'a> {
    values: &'a [u8],
    ends: &'a [usize],
    /// Offset in the data just past the record (its line break included).
    pub(crate) end: usize,
}

impl Record<'_> {
    /// Its number of fields.
    pub(crate) fn width(&self) -> usize {
        self.ends.len()
    }

    /// Its fields' values, unquoted.
    pub(crate) fn fields(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let value = &self.values[start..end];
            start = end;
            value
        })
    }
}

/// Frames the records of `data` with csv-core as `rules` say (the reader's own framing),
/// calling `each` with every record until it returns false; a last record without its line
/// break counts only when `complete` (`data` is the whole file).
pub(crate) fn each_record(
    data: &[u8],
    complete: bool,
    rules: CsvRules,
    mut each: impl FnMut(&Record<'_>) -> bool,
) {
    use csv_core::ReadRecordResult as R;
    let mut reader = rules.csv_core();
    let mut out = vec![0u8; 1 << 16];
    let mut ends = vec![0usize; 256];
    let (mut pos, mut used, mut fields) = (0usize, 0usize, 0usize);
    loop {
        let input = if pos < data.len() {
            &data[pos..]
        } else if complete {
            &[][..]
        } else {
            return;
        };
        let (res, nin, nout, nend) =
            reader.read_record(input, &mut out[used..], &mut ends[fields..]);
        pos += nin;
        // csv-core's field ends count from the record's start across calls.
        used += nout;
        fields += nend;
        match res {
            R::OutputFull => out.resize(out.len() * 2, 0),
            R::OutputEndsFull => ends.resize(ends.len() * 2, 0),
            R::Record => {
                let record = Record {
                    values: &out[..used],
                    ends: &ends[..fields],
                    end: pos,
                };
                if !each(&record) {
                    return;
                }
                (used, fields) = (0, 0);
            }
            R::InputEmpty if !complete && pos >= data.len() => return,
            R::InputEmpty => {}
            R::End => return,
        }
    }
}
