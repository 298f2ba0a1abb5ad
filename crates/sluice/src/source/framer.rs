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
    /// Where each of those records starts (the same records as `ends`), when kept.
    pub(crate) starts: std::collections::VecDeque<u64>,
    /// Whether `starts` is kept (a scan needs it only to give rows their line numbers).
    keep_starts: bool,
    /// Blocks framed by the fast path (the tests check it is taken).
    #[cfg(test)]
    blocks: u64,
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
            keep_starts: true,
            #[cfg(test)]
            blocks: 0,
        }
    }

    /// The same framer, keeping where records start only when `keep` (see
    /// [`RecordScan::starts`]).
    pub(crate) fn keeping_starts(mut self, keep: bool) -> Self {
        self.keep_starts = keep;
        self
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
        self.over_with(bytes, max, true)
    }

    /// [`Self::over`], with or without the 64-byte fast path ([`Self::block`]).
    fn over_with(&mut self, bytes: &[u8], max: u64, fast: bool) -> Option<usize> {
        // The fast path knows no escape character (a doubled quote is the only escape).
        let fast = self.csv.filter(|r| fast && r.escape.is_none());
        let mut i = 0;
        // The block the fast path last refused is scanned byte by byte up to here.
        let mut careful_until = 0;
        while i < bytes.len() {
            if let (Some(rules), true) = (fast, i >= careful_until) {
                if let Some(block) = bytes[i..].first_chunk::<BLOCK>() {
                    if self.block(block, rules, max) {
                        i += BLOCK;
                        continue;
                    }
                    careful_until = i + BLOCK;
                }
            }
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

    /// Frames a block of [`BLOCK`] bytes at once, or returns false (nothing changed) when
    /// the block needs the byte-by-byte rules: a quote that csv-core reads as text (inside
    /// an unquoted field, or after a closing quote), a closing quote as the block's last byte,
    /// a comment character, or a record that may reach `max` bytes here. Otherwise every
    /// quote toggles the quoted state (a doubled quote toggles twice), so quoted stretches
    /// come from a prefix XOR of the quote bits, and the line ends outside them end lines.
    /// Clean files take this path for nearly every block; the byte-by-byte rules stay the
    /// reference, and the tests hold the two equal on random text.
    /// `rules` are the framer's own, with no escape character.
    fn block(&mut self, block: &[u8; BLOCK], rules: CsvRules, max: u64) -> bool {
        use ScanState::*;
        let inside = match self.state {
            Quoted => true,
            RecordStart | FieldStart | Unquoted => false,
            QuoteInQuoted | Escaped | Comment => return false,
        };
        if self.pos + BLOCK as u64 - self.record_start >= max {
            return false;
        }
        let m = Classes::of(block, rules);
        if m.comment != 0 {
            return false;
        }
        // Bit k: inside quotes after byte k.
        let quoted = prefix_xor(m.quote) ^ if inside { !0 } else { 0 };
        let opening = m.quote & quoted;
        let closing = m.quote & !quoted;
        // A quote opens a field only where a field starts (or doubles a closing quote).
        let starts_field = matches!(self.state, RecordStart | FieldStart)
            || (self.state == Unquoted && self.prev == rules.delimiter);
        let may_open = ((m.delimiter | m.line_end | closing) << 1) | u64::from(starts_field);
        // A closing quote is followed by another quote, a delimiter or a line end (bit 63
        // stays clear: what follows the block is unknown).
        let may_close = (m.quote | m.delimiter | m.line_end) >> 1;
        if opening & !may_open != 0 || closing & !may_close != 0 {
            return false;
        }
        let ends = m.line_end & !quoted;
        // A line end right after another (or at a record's start) ends an empty line.
        let counted = ends & !((ends << 1) | u64::from(self.state == RecordStart));
        let base = self.pos;
        let mut rest = ends;
        while rest != 0 {
            let k = rest.trailing_zeros();
            rest &= rest - 1;
            let at = base + u64::from(k);
            if counted & (1 << k) != 0 {
                self.content_end = at;
                self.frame(at);
            }
            self.record_start = at + 1;
        }
        let last = block[BLOCK - 1];
        self.state = if quoted >> 63 == 1 {
            Quoted
        } else if ends >> 63 == 1 {
            RecordStart
        } else if last == rules.delimiter {
            FieldStart
        } else {
            Unquoted
        };
        self.prev = last;
        self.pos += BLOCK as u64;
        #[cfg(test)]
        {
            self.blocks += 1;
        }
        true
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
        if self.keep_starts {
            self.starts.push_back(self.record_start);
        }
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

    /// Where the first `n` framed records not yet taken start (none unless kept).
    pub(crate) fn starts(&self, n: usize) -> impl Iterator<Item = u64> + '_ {
        self.starts.iter().take(n).copied()
    }

    /// Takes the framed records whose content ends at or before `offset`: their rows have
    /// been decoded.
    pub(crate) fn take_upto(&mut self, offset: u64) -> u64 {
        let n = self.ends.partition_point(|&e| e <= offset);
        self.ends.drain(..n);
        self.starts.drain(..n.min(self.starts.len()));
        n as u64
    }
}

/// Bytes [`RecordScan::block`] frames at once (one bit each in a `u64`).
pub(crate) const BLOCK: usize = 64;

/// The bytes of a block that matter for framing, one bit per byte.
#[derive(Default)]
pub(crate) struct Classes {
    pub(crate) quote: u64,
    pub(crate) delimiter: u64,
    /// `\n` or `\r`.
    pub(crate) line_end: u64,
    pub(crate) comment: u64,
}

impl Classes {
    /// Classifies a block of [`BLOCK`] bytes, 16 at a time (SSE2 compares on x86_64).
    /// Inlined where blocks are framed: the compared bytes are then set up once per loop,
    /// not once per block.
    #[inline(always)]
    pub(crate) fn of(block: &[u8; BLOCK], rules: CsvRules) -> Classes {
        use wide::u8x16;
        let splat = u8x16::splat;
        let (quote, delimiter) = (splat(rules.quote), splat(rules.delimiter));
        let (lf, cr) = (splat(b'\n'), splat(b'\r'));
        let comment = rules.comment.map(splat);
        let mut out = Classes::default();
        for (k, lane) in block.chunks_exact(16).enumerate() {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(lane);
            let v = u8x16::from(bytes);
            let bits = |m: u8x16| u64::from(m.to_bitmask()) << (16 * k);
            out.quote |= bits(v.simd_eq(quote));
            out.delimiter |= bits(v.simd_eq(delimiter));
            out.line_end |= bits(v.simd_eq(lf) | v.simd_eq(cr));
            if let Some(c) = comment {
                out.comment |= bits(v.simd_eq(c));
            }
        }
        out
    }
}

/// Bit k of the result is the XOR of bits 0..=k of `x`.
pub(crate) fn prefix_xor(mut x: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        x ^= x << shift;
    }
    x
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

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: seeded, so a failing case replays.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
    }

    fn rules(delimiter: u8, comment: Option<u8>) -> CsvRules {
        CsvRules {
            delimiter,
            quote: b'"',
            escape: None,
            comment,
        }
    }

    /// Text that is mostly clean CSV with `delimiter` (quoted fields with doubled quotes,
    /// delimiters and line breaks inside, CRLF and LF, empty lines), with, at rate `1/noise`,
    /// a byte anywhere: a stray quote, a comment character, a lone CR, the other delimiter.
    fn text(rng: &mut Rng, len: usize, noise: u64, delimiter: u8) -> Vec<u8> {
        const FIELDS: [&[u8]; 6] = [
            b"value 12.5",
            b"\"quoted, \"\"with\"\" a\nbreak\"",
            b"\"plain\"",
            b"",
            b"7",
            b"\"\"",
        ];
        let mut out = Vec::with_capacity(len + 64);
        while out.len() < len {
            for f in 0..1 + rng.below(6) {
                if f > 0 {
                    out.push(delimiter);
                }
                if rng.below(noise) == 0 {
                    out.push(b"\"#;,\r\n a"[rng.below(8) as usize]);
                }
                out.extend_from_slice(FIELDS[rng.below(6) as usize]);
            }
            match rng.below(8) {
                0 => out.extend_from_slice(b"\r\n"),
                1 => out.extend_from_slice(b"\n\n"),
                _ => out.push(b'\n'),
            }
        }
        out
    }

    /// Everything a caller can see of a framer.
    fn seen(s: &RecordScan) -> (u64, u64, u64, Vec<u64>, Vec<u64>) {
        let ends = s.ends.iter().copied().collect();
        let starts = s.starts.iter().copied().collect();
        (s.records, s.pos, s.record_start, ends, starts)
    }

    /// The fast path frames exactly as the byte-by-byte rules do, on random text cut into
    /// random chunks (state carried across them), under comment rules or none, two
    /// delimiters and size limits that cut records; and it is taken for most blocks of
    /// clean text.
    #[test]
    fn the_fast_path_frames_as_the_byte_rules_do() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut fast_blocks, mut bytes_seen) = (0u64, 0u64);
        for case in 0..3000 {
            let noise = [2, 20, 400, 1_000_000][case % 4];
            let len = 1 + rng.below(3000) as usize;
            let rules = rules([b',', b';'][case % 2], [None, Some(b'#')][(case / 2) % 2]);
            let data = text(&mut rng, len, noise, rules.delimiter);
            let max = if case % 5 == 0 {
                20 + rng.below(300)
            } else {
                u64::MAX
            };
            let start = rng.below(1000);
            let (mut fast, mut careful) =
                (RecordScan::csv(rules, start), RecordScan::csv(rules, start));
            let mut at = 0;
            while at < data.len() {
                let n = (1 + rng.below(400) as usize).min(data.len() - at);
                let chunk = &data[at..at + n];
                let a = fast.over_with(chunk, max, true);
                let b = careful.over_with(chunk, max, false);
                assert_eq!(a, b, "case {case}: where the limit is hit");
                assert_eq!(
                    seen(&fast),
                    seen(&careful),
                    "case {case} after {} bytes",
                    at + n
                );
                if a.is_some() {
                    break;
                }
                at += n;
            }
            fast.finish();
            careful.finish();
            assert_eq!(seen(&fast), seen(&careful), "case {case} at the end");
            if noise == 1_000_000 && max == u64::MAX {
                fast_blocks += fast.blocks;
                bytes_seen += data.len() as u64;
            }
        }
        // Clean text: chunks of up to 400 bytes leave at most a few partial blocks each.
        assert!(
            fast_blocks * BLOCK as u64 > bytes_seen / 2,
            "fast path took {fast_blocks} blocks of {bytes_seen} bytes"
        );
    }

    /// The record count agrees with csv-core's own framing (the decoder's) on clean text.
    #[test]
    fn the_record_count_is_csv_core_s() {
        let mut rng = Rng(42);
        for case in 0..200 {
            let len = 1 + rng.below(5000) as usize;
            let data = text(&mut rng, len, 1_000_000, b',');
            let rules = rules(b',', None);
            let mut scan = RecordScan::csv(rules, 0);
            assert_eq!(scan.over(&data, u64::MAX), None);
            scan.finish();
            let mut records = 0;
            each_record(&data, true, rules, |_| {
                records += 1;
                true
            });
            assert_eq!(scan.records, records, "case {case}");
        }
    }
}
