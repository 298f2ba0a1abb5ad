//! The decoder of clean CSV text: fields found 64 bytes at a time, only the decoded columns
//! kept, each value parsed into its typed column as soon as its field is framed.
//!
//! arrow-csv's decoder (csv-core underneath) copies every field of every row, read or not,
//! into a record buffer one byte at a time, and then parses the columns from it. Here a
//! block of 64 bytes is classified with SIMD compares (the framer's [`Classes`]); quoted
//! stretches come from a prefix XOR of the quote bits; the delimiters and line ends outside
//! them bound the fields, and the field of a decoded column is parsed into its column as
//! soon as it is found (no list of field bounds is kept; measured, this is as fast as a
//! second pass per column, not faster: the cost is the parsing). The bytes are framed where
//! the input holds them: a batch keeps the input's chunks by reference, and only a field that
//! two chunks share is copied, to be read whole. The values are parsed with
//! arrow's own parsers (plain integers and decimals the short way, to the same value), so a
//! value reads the same on either path.
//!
//! arrow-csv stays the careful path, and the reference: a block where csv-core's rules could
//! read the text otherwise (a quote inside an unquoted field) hands the rest of the batch to
//! arrow's decoder, and a batch holding anything else the fast path does not take (a row of
//! another width, a value that does not parse, invalid UTF-8, an unterminated quote at the
//! end of input) is decoded again by arrow's decoder at the flush, which then fails or
//! succeeds exactly as it would have alone (a failure sends the batch to the row-by-row
//! recovery of [`super::csv_scan`]). The tests hold both decoders equal on random text cut
//! at random places.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::builder::{BooleanBufferBuilder, NullBufferBuilder};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    ArrayRef, ArrowPrimitiveType, BooleanArray, NullArray, PrimitiveArray, RecordBatch,
    RecordBatchOptions, StringArray,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::kernels::cast_utils::{string_to_datetime, Parser};
use datafusion::arrow::csv::reader::Decoder;
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use datafusion::arrow::error::ArrowError;

use super::csv_scan::CsvScanConfig;
use super::framer::{prefix_xor, Classes, CsvRules, BLOCK};

type ArrowResult<T> = std::result::Result<T, ArrowError>;

/// A file column that is not decoded.
const SKIPPED: u32 = u32::MAX;

/// Decodes CSV batches from a stream of bytes, with the interface of arrow's [`Decoder`]
/// (`decode` takes what it can, `flush` makes the batch); see the module documentation.
pub(crate) struct FastCsv {
    /// The scan's settings (the careful decoder is made from them).
    config: CsvScanConfig,
    rules: CsvRules,
    /// Columns in the file: every record must have this many fields.
    width: usize,
    /// For each file column, its index in `columns` (or [`SKIPPED`]).
    slot: Vec<u32>,
    /// The decoded columns of the batch, built as their fields are framed.
    columns: Vec<Box<dyn Column>>,
    /// The batches' schema: the decoded columns, as arrow's decoder makes it.
    schema: SchemaRef,
    batch_size: usize,
    /// A byte that is no quote, delimiter or line end (fills the last, short block).
    pad: u8,
    /// The bytes taken since the last flush, as the input gave them (not copied: arrow's
    /// decoder reads them again when the fast path gives the batch up).
    pieces: Vec<Bytes>,
    /// The bytes taken since the last flush are UTF-8 so far.
    utf8: Utf8Pieces,
    /// The bytes of the field being framed that came in earlier pieces (the only bytes
    /// copied: a field the input's chunks cut in two).
    carry: Vec<u8>,
    /// Rows framed in `pieces` (the header not counted).
    rows: usize,
    /// Fields of the record being framed so far.
    field: usize,
    /// Where the field being framed starts in the piece being framed (after `carry`).
    field_start: usize,
    /// Inside quotes after the last byte taken.
    in_quotes: bool,
    /// A quote as the next byte may open a field (the last byte ended a field, a record or
    /// a quoted stretch, or nothing was taken yet).
    open_ok: bool,
    /// The batch starts with the file's header line (its first record is no row).
    header: bool,
    /// The header record is not framed yet.
    header_left: bool,
    /// The batch holds a record this decoder does not take (another width): arrow's
    /// decoder reads the batch at the flush.
    odd: bool,
    /// A value of the batch did not parse (or a column grew too long): arrow's decoder
    /// reads the batch at the flush.
    bad: bool,
    /// The end of the input was signalled.
    eof: bool,
    /// Arrow's decoder, reading the rest of this batch (the fast path refused a block).
    careful: Option<Box<Decoder>>,
    /// Batches made by the fast path (the tests check it is taken).
    #[cfg(test)]
    fast: usize,
    /// Of those, the batches that began with the header line.
    #[cfg(test)]
    fast_headed: usize,
}

impl FastCsv {
    /// The fast decoder for `config`, or `None` when it does not apply: NDJSON, an escape
    /// or comment character, a null pattern, rows ending with a delimiter, a delimiter or
    /// quote outside ASCII, or a decoded column of a type it does not parse.
    pub(crate) fn new(config: &CsvScanConfig, header: bool) -> Option<FastCsv> {
        use super::csv_scan::RowFormat;
        let rules = config.rules;
        let plain = |b: u8| b.is_ascii() && b != b'\n' && b != b'\r';
        if config.format != RowFormat::Csv
            || config.trailing
            || config.null_regex.is_some()
            || rules.escape.is_some()
            || rules.comment.is_some()
            || !plain(rules.delimiter)
            || !plain(rules.quote)
            || rules.delimiter == rules.quote
        {
            return None;
        }
        let fields = config.file_schema.fields();
        let width = fields.len();
        let projection = config
            .file_projection
            .clone()
            .unwrap_or_else(|| (0..width).collect());
        let batch_size = config.batch_size.max(1);
        let mut slot = vec![SKIPPED; width];
        let mut columns = Vec::with_capacity(projection.len());
        for (k, &i) in projection.iter().enumerate() {
            if *slot.get(i)? != SKIPPED {
                // A column decoded twice: arrow's decoder handles it.
                return None;
            }
            slot[i] = k as u32;
            columns.push(column_for(fields[i].data_type())?);
        }
        let schema = Arc::new(Schema::new_with_metadata(
            projection
                .iter()
                .map(|&i| Arc::clone(&fields[i]))
                .collect::<Vec<_>>(),
            config.file_schema.metadata().clone(),
        ));
        let pad = (0u8..=255)
            .find(|b| plain(*b) && *b != rules.delimiter && *b != rules.quote)
            .unwrap_or(b'a');
        Some(FastCsv {
            config: config.clone(),
            rules,
            width,
            slot,
            columns,
            schema,
            batch_size,
            pad,
            pieces: Vec::new(),
            utf8: Utf8Pieces::default(),
            carry: Vec::new(),
            rows: 0,
            field: 0,
            field_start: 0,
            in_quotes: false,
            open_ok: true,
            header,
            header_left: header,
            odd: false,
            bad: false,
            eof: false,
            careful: None,
            #[cfg(test)]
            fast: 0,
            #[cfg(test)]
            fast_headed: 0,
        })
    }

    /// Takes bytes from `buf` up to the end of the batch's last row, or all of them; an
    /// empty `buf` is the end of the input. Returns the bytes taken (kept by reference).
    pub(crate) fn decode(&mut self, buf: &Bytes) -> ArrowResult<usize> {
        if let Some(d) = &mut self.careful {
            self.eof |= buf.is_empty();
            return d.decode(buf);
        }
        if buf.is_empty() {
            self.end_of_input()?;
            return Ok(0);
        }
        if self.rows >= self.batch_size {
            return Ok(0);
        }
        // The bytes are framed where the input holds them; a field that the end of `buf`
        // cuts is carried over (copied) to be read with its rest.
        self.field_start = 0;
        let mut taken = 0;
        while taken < buf.len() {
            let len = (buf.len() - taken).min(BLOCK);
            match self.block(buf, taken, len) {
                Some(None) => taken += len,
                Some(Some(end)) => {
                    taken += end;
                    break;
                }
                None => {
                    // csv-core might read this block otherwise: arrow's decoder reads the
                    // batch from its start (fewer rows than a batch so far, all taken).
                    self.take(buf.slice(..taken));
                    let mut d = self.careful_decoder(false)?;
                    let more = d.decode(&buf[taken..])?;
                    self.careful = Some(d);
                    return Ok(taken + more);
                }
            }
        }
        self.carry.extend_from_slice(&buf[self.field_start..taken]);
        self.field_start = 0;
        self.take(buf.slice(..taken));
        Ok(taken)
    }

    /// Keeps `piece`, the bytes just taken.
    fn take(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.utf8.push(&piece);
            self.pieces.push(piece);
        }
    }

    /// A batch is complete: [`Self::flush`] before more input.
    pub(crate) fn full(&self) -> bool {
        match &self.careful {
            Some(d) => d.capacity() == 0,
            None => self.rows >= self.batch_size,
        }
    }

    /// The rows taken since the last flush, as a batch (`None`: none).
    pub(crate) fn flush(&mut self) -> ArrowResult<Option<RecordBatch>> {
        if let Some(d) = &mut self.careful {
            // A batch cut short (by its size in bytes) may end inside a record that arrow's
            // decoder holds: it reads on until a batch of its own ends.
            let whole = d.capacity() == 0 || self.eof;
            let batch = d.flush();
            if whole {
                self.reset();
            }
            return batch;
        }
        if self.rows == 0 && !self.odd {
            return Ok(None);
        }
        if self.field != 0 || !self.carry.is_empty() {
            return Err(ArrowError::CsvError(
                "Cannot flush part way through record".into(),
            ));
        }
        let batch = match self.odd || self.bad {
            true => None,
            false => self.fast_batch(),
        };
        #[cfg(test)]
        {
            self.fast += usize::from(batch.is_some());
            self.fast_headed += usize::from(batch.is_some() && self.header);
        }
        let batch = match batch {
            Some(b) => Ok(Some(b)),
            None => {
                let mut d = self.careful_decoder(self.eof)?;
                d.flush()
            }
        };
        self.reset();
        batch
    }

    /// Arrow's decoder, fed the batch's bytes so far (and the end of input when `eof`).
    fn careful_decoder(&self, eof: bool) -> ArrowResult<Box<Decoder>> {
        let mut d = Box::new(self.config.arrow_csv(self.header)?);
        for piece in &self.pieces {
            let mut pos = 0;
            while pos < piece.len() {
                let n = d.decode(&piece[pos..])?;
                if n == 0 {
                    // More rows than a batch: never, the fast path framed fewer.
                    return Err(ArrowError::CsvError(
                        "the careful decoder stopped before the batch's end".into(),
                    ));
                }
                pos += n;
            }
        }
        if eof {
            d.decode(&[])?;
        }
        Ok(d)
    }

    /// Starts the next batch.
    fn reset(&mut self) {
        self.careful = None;
        self.pieces.clear();
        self.utf8 = Utf8Pieces::default();
        self.carry.clear();
        self.columns.iter_mut().for_each(|c| c.clear());
        self.rows = 0;
        self.field = 0;
        self.field_start = 0;
        self.in_quotes = false;
        self.open_ok = true;
        self.header = false;
        self.header_left = false;
        self.odd = false;
        self.bad = false;
    }

    /// The end of the input: a last record without a line break is a row.
    fn end_of_input(&mut self) -> ArrowResult<()> {
        self.eof = true;
        if self.field == 0 && self.carry.is_empty() {
            return Ok(());
        }
        if self.in_quotes {
            // An unterminated quote: csv-core's reading of it is arrow's to give.
            self.careful = Some(self.careful_decoder(true)?);
            return Ok(());
        }
        self.field_start = 0;
        self.end_field(&[], 0);
        self.end_record();
        Ok(())
    }

    /// Frames the `n` bytes (at most [`BLOCK`]) of `buf` at `at`: `None` when csv-core
    /// might read them otherwise (nothing taken), `Some(Some(k))` when the batch filled up
    /// after the first `k` of them, `Some(None)` when all were taken.
    fn block(&mut self, buf: &[u8], at: usize, n: usize) -> Option<Option<usize>> {
        let m = match buf[at..].first_chunk::<BLOCK>() {
            Some(block) if n == BLOCK => Classes::of(block, self.rules),
            _ => {
                let mut padded = [self.pad; BLOCK];
                padded[..n].copy_from_slice(&buf[at..at + n]);
                Classes::of(&padded, self.rules)
            }
        };
        let last = 1u64 << (n - 1);
        let valid = last | (last - 1);
        // Bit k: inside quotes after byte k.
        let quoted = prefix_xor(m.quote) ^ if self.in_quotes { !0 } else { 0 };
        let opening = m.quote & quoted;
        let closing = m.quote & !quoted;
        let ends = m.delimiter | m.line_end;
        // A quote opens a field only where a field starts (or doubles a closing quote):
        // csv-core reads any other quote outside quotes as text. Text after a closing quote
        // (`"a"b`) needs no check here: csv-core adds it to the field, which ends at the next
        // delimiter or line end as it does here (a quote in that text would be refused as an
        // opening one), and `value` refuses a field that does not end with its quote.
        let may_open = ((ends | closing) << 1) | u64::from(self.open_ok);
        if opening & !may_open != 0 {
            return None;
        }
        let separators = ends & !quoted & valid;
        let mut rest = separators;
        while rest != 0 {
            let k = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let pos = at + k;
            let line_end = m.line_end >> k & 1 == 1;
            if line_end && self.field == 0 && pos == self.field_start && self.carry.is_empty() {
                // An empty line (or the LF of a CRLF): no record.
                self.field_start = pos + 1;
                continue;
            }
            self.end_field(buf, pos);
            if line_end {
                self.end_record();
                if self.rows >= self.batch_size {
                    self.in_quotes = false;
                    self.open_ok = true;
                    return Some(Some(k + 1));
                }
            }
        }
        self.in_quotes = quoted & last != 0;
        self.open_ok = (separators | closing) & last != 0;
        Some(None)
    }

    /// The field being framed ends at `pos` of `buf` (a delimiter, a line end or the
    /// input's end): the value of a decoded column is parsed now (the header's names are no
    /// values).
    #[inline(always)]
    fn end_field(&mut self, buf: &[u8], pos: usize) {
        if !self.carry.is_empty() {
            self.push_carried(buf, pos);
        } else if let Some(c) = self.target() {
            let (text, len) = (&buf[self.field_start..], pos - self.field_start);
            self.bad = !self.columns[c].push(text, len, self.rules.quote);
        }
        self.field += 1;
        self.field_start = pos + 1;
    }

    /// The column the field being framed is parsed into: none for a column not decoded,
    /// the header's names, or once the batch is known bad.
    #[inline(always)]
    fn target(&self) -> Option<usize> {
        match self.slot.get(self.field) {
            Some(&s) if s != SKIPPED && !self.header_left && !self.bad => Some(s as usize),
            _ => None,
        }
    }

    /// The value of a field that began in an earlier piece, ending at `pos` of `buf`: its
    /// bytes joined, then parsed as [`Self::end_field`] parses a value.
    #[cold]
    #[inline(never)]
    fn push_carried(&mut self, buf: &[u8], pos: usize) {
        self.carry.extend_from_slice(&buf[..pos]);
        if let Some(c) = self.target() {
            let len = self.carry.len();
            self.bad = !self.columns[c].push(&self.carry, len, self.rules.quote);
        }
        self.carry.clear();
    }

    /// The record being framed ended.
    #[inline]
    fn end_record(&mut self) {
        if self.field != self.width {
            self.odd = true;
        }
        if !std::mem::take(&mut self.header_left) {
            self.rows += 1;
        }
        self.field = 0;
    }

    /// The batch, or `None` when its text is not UTF-8 (arrow's decoder fails such a batch,
    /// whichever column holds the bytes).
    fn fast_batch(&mut self) -> Option<RecordBatch> {
        if !self.utf8.valid() {
            return None;
        }
        let arrays = self
            .columns
            .iter_mut()
            .map(|c| c.finish())
            .collect::<Option<Vec<_>>>()?;
        RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            arrays,
            &RecordBatchOptions::new()
                .with_match_field_names(true)
                .with_row_count(Some(self.rows)),
        )
        .ok()
    }
}

/// Checks that text given in pieces is UTF-8 (as one check of the pieces joined would),
/// a character cut between two pieces included.
#[derive(Default)]
struct Utf8Pieces {
    /// The start of a character that the last piece cut (at most 3 bytes).
    cut: Vec<u8>,
    /// A byte sequence that is no UTF-8 was seen.
    bad: bool,
}

impl Utf8Pieces {
    /// Checks the next piece.
    fn push(&mut self, mut piece: &[u8]) {
        if self.bad {
            return;
        }
        if let Some(&lead) = self.cut.first() {
            // The lead byte of a cut character tells its length (a valid start, as the
            // check of the last piece found).
            let width = match lead {
                0xF0.. => 4,
                0xE0.. => 3,
                _ => 2,
            };
            let k = (width - self.cut.len()).min(piece.len());
            self.cut.extend_from_slice(&piece[..k]);
            piece = &piece[k..];
            if self.cut.len() < width {
                return;
            }
            self.bad = std::str::from_utf8(&self.cut).is_err();
            self.cut.clear();
            if self.bad {
                return;
            }
        }
        if let Err(e) = std::str::from_utf8(piece) {
            match e.error_len() {
                // The piece ends inside a character: its rest comes next.
                None => self.cut.extend_from_slice(&piece[e.valid_up_to()..]),
                Some(_) => self.bad = true,
            }
        }
    }

    /// All the pieces so far are UTF-8 (none ends inside a character).
    fn valid(&self) -> bool {
        !self.bad && self.cut.is_empty()
    }
}

/// A decoded column, built a value at a time as the fields are framed.
trait Column: Send {
    /// Appends the value of the field that is the first `len` bytes of `text` (quotes
    /// included; the text after it may follow; an empty value is NULL, as arrow-csv reads
    /// it): false when it does not parse.
    fn push(&mut self, text: &[u8], len: usize, quote: u8) -> bool;
    /// The values appended since the last call, as an array (`None`: they make none).
    fn finish(&mut self) -> Option<ArrayRef>;
    /// Drops the values appended since the last call.
    fn clear(&mut self);
}

/// The builder of a column of type `t`, or `None` for a type the fast path does not parse.
/// Builders start empty and then reserve what the last batch took (a lookup of two rows
/// holds two rows' worth of memory, a scan's batches one allocation per buffer).
fn column_for(t: &DataType) -> Option<Box<dyn Column>> {
    use DataType::*;
    Some(match t {
        Null => Box::new(Nulls(0)),
        Utf8 => Box::new(Text::new(0, 0)),
        Boolean => Box::new(Bools::new(0)),
        Int8 => typed::<Int8Type>(t, by_arrow::<Int8Type>),
        Int16 => typed::<Int16Type>(t, by_arrow::<Int16Type>),
        Int32 => typed::<Int32Type>(t, by_arrow::<Int32Type>),
        // Plain integers the short way (the same value), the rest by arrow's parser.
        Int64 => typed::<Int64Type>(t, move |b| {
            plain_i64(b).or_else(|| by_arrow::<Int64Type>(b))
        }),
        UInt8 => typed::<UInt8Type>(t, by_arrow::<UInt8Type>),
        UInt16 => typed::<UInt16Type>(t, by_arrow::<UInt16Type>),
        UInt32 => typed::<UInt32Type>(t, by_arrow::<UInt32Type>),
        UInt64 => typed::<UInt64Type>(t, by_arrow::<UInt64Type>),
        Float32 => typed::<Float32Type>(t, by_arrow::<Float32Type>),
        // Plain decimals the short way (the same value), the rest by arrow's parser.
        Float64 => typed::<Float64Type>(t, move |b| {
            plain_f64(b).or_else(|| by_arrow::<Float64Type>(b))
        }),
        Date32 => typed::<Date32Type>(t, by_arrow::<Date32Type>),
        Timestamp(unit, tz) => match unit {
            TimeUnit::Second => timestamps::<TimestampSecondType>(t, tz.as_deref())?,
            TimeUnit::Millisecond => timestamps::<TimestampMillisecondType>(t, tz.as_deref())?,
            TimeUnit::Microsecond => timestamps::<TimestampMicrosecondType>(t, tz.as_deref())?,
            TimeUnit::Nanosecond => timestamps::<TimestampNanosecondType>(t, tz.as_deref())?,
        },
        _ => return None,
    })
}

/// A value's bytes as text (arrow's parsers read `&str`).
fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// A value read by arrow's parser for `T`.
fn by_arrow<T: Parser>(b: &[u8]) -> Option<T::Native> {
    text(b).and_then(T::parse)
}

/// The value of a field read by `parse`: `Some(None)` for an empty one (NULL, as arrow-csv
/// reads it), `None` when it does not parse.
#[inline(always)]
fn parsed<V>(field: &[u8], quote: u8, parse: impl Fn(&[u8]) -> Option<V>) -> Option<Option<V>> {
    let v = value(field, quote)?;
    if v.is_empty() {
        return Some(None);
    }
    parse(&v).map(Some)
}

/// The value of a field: a quoted field without its quotes, a doubled quote inside read as
/// one. `None` for a quoted field with text after its closing quote (csv-core's reading of
/// it is left to arrow's decoder).
#[inline(always)]
fn value(field: &[u8], quote: u8) -> Option<Cow<'_, [u8]>> {
    match field.first() {
        Some(&q) if q == quote => quoted(field, quote),
        _ => Some(Cow::Borrowed(field)),
    }
}

/// [`value`] of a field that starts with a quote.
#[cold]
fn quoted(field: &[u8], quote: u8) -> Option<Cow<'_, [u8]>> {
    if field.len() < 2 || field[field.len() - 1] != quote {
        return None;
    }
    let inner = &field[1..field.len() - 1];
    if memchr::memchr(quote, inner).is_none() {
        return Some(Cow::Borrowed(inner));
    }
    // Each pair of quotes is one (as `str::replace` of the pair reads them, left to right).
    let mut out = Vec::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(k) = memchr::memchr(quote, rest) {
        out.extend_from_slice(&rest[..=k]);
        rest = &rest[k + 1..];
        if rest.first() == Some(&quote) {
            rest = &rest[1..];
        }
    }
    out.extend_from_slice(rest);
    Some(Cow::Owned(out))
}

/// A column of type Null: only its length.
struct Nulls(usize);

impl Column for Nulls {
    fn push(&mut self, _: &[u8], _: usize, _: u8) -> bool {
        self.0 += 1;
        true
    }
    fn finish(&mut self) -> Option<ArrayRef> {
        Some(Arc::new(NullArray::new(std::mem::take(&mut self.0))))
    }
    fn clear(&mut self) {
        self.0 = 0;
    }
}

/// Values up to this long are copied into a Utf8 column as a block of this size.
const SHORT: usize = 16;

/// A Utf8 column: the values' bytes one after another, and where each ends.
struct Text {
    offsets: Vec<i32>,
    values: Vec<u8>,
    nulls: NullBufferBuilder,
}

impl Text {
    /// A builder with room for `rows` values of `bytes` bytes in all.
    fn new(rows: usize, bytes: usize) -> Text {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Text {
            offsets,
            values: Vec::with_capacity(bytes),
            nulls: NullBufferBuilder::new(0),
        }
    }
}

impl Column for Text {
    fn push(&mut self, text: &[u8], len: usize, quote: u8) -> bool {
        let field = &text[..len];
        match text.get(..SHORT) {
            // A short unquoted value is copied as 16 bytes (a copy of known size, with no
            // call) and cut back to its length.
            Some(wide) if len <= SHORT && len > 0 && field[0] != quote => {
                let old = self.values.len();
                let wide: &[u8; SHORT] = wide.try_into().expect("16 bytes");
                self.values.extend_from_slice(wide);
                self.values.truncate(old + len);
                self.nulls.append_non_null();
            }
            _ => {
                let Some(v) = value(field, quote) else {
                    return false;
                };
                if v.is_empty() {
                    self.nulls.append_null();
                } else {
                    self.values.extend_from_slice(&v);
                    self.nulls.append_non_null();
                }
            }
        }
        // A batch's text stays under 2 GiB (the scan cuts it short), so this holds.
        match i32::try_from(self.values.len()) {
            Ok(end) => {
                self.offsets.push(end);
                true
            }
            Err(_) => false,
        }
    }
    fn finish(&mut self) -> Option<ArrayRef> {
        let next = Text::new(self.offsets.len() - 1, self.values.len());
        let offsets = std::mem::replace(&mut self.offsets, next.offsets);
        let values = std::mem::replace(&mut self.values, next.values);
        let nulls = self.nulls.finish();
        // Checks the offsets and that the values are UTF-8 (they are: pieces of UTF-8 text
        // cut at ASCII delimiters and quotes).
        let array = StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Buffer::from_vec(values),
            nulls,
        )
        .ok()?;
        Some(Arc::new(array))
    }
    fn clear(&mut self) {
        self.offsets.truncate(1);
        self.values.clear();
        self.nulls.truncate(0);
    }
}

/// A Boolean column, as arrow-csv reads booleans.
struct Bools {
    values: BooleanBufferBuilder,
    nulls: NullBufferBuilder,
}

impl Bools {
    /// A builder with room for `rows` values.
    fn new(rows: usize) -> Bools {
        Bools {
            values: BooleanBufferBuilder::new(rows),
            nulls: NullBufferBuilder::new(0),
        }
    }
}

impl Column for Bools {
    fn push(&mut self, text: &[u8], len: usize, quote: u8) -> bool {
        let Some(b) = parsed(&text[..len], quote, parse_bool) else {
            return false;
        };
        self.values.append(b.unwrap_or_default());
        self.nulls.append(b.is_some());
        true
    }
    fn finish(&mut self) -> Option<ArrayRef> {
        let next = BooleanBufferBuilder::new(self.values.len());
        let mut values = std::mem::replace(&mut self.values, next);
        Some(Arc::new(BooleanArray::new(
            values.finish(),
            self.nulls.finish(),
        )))
    }
    fn clear(&mut self) {
        self.values.truncate(0);
        self.nulls.truncate(0);
    }
}

/// A column of a primitive type, its values read by `parse` (from a value's bytes).
struct Typed<T: ArrowPrimitiveType, P> {
    values: Vec<T::Native>,
    nulls: NullBufferBuilder,
    parse: P,
    /// The column's type (a timestamp's carries its time zone).
    data_type: DataType,
}

fn typed<T: ArrowPrimitiveType>(
    t: &DataType,
    parse: impl Fn(&[u8]) -> Option<T::Native> + Send + 'static,
) -> Box<dyn Column> {
    Box::new(Typed::<T, _> {
        values: Vec::new(),
        nulls: NullBufferBuilder::new(0),
        parse,
        data_type: t.clone(),
    })
}

impl<T, P> Column for Typed<T, P>
where
    T: ArrowPrimitiveType,
    P: Fn(&[u8]) -> Option<T::Native> + Send,
{
    fn push(&mut self, text: &[u8], len: usize, quote: u8) -> bool {
        let Some(x) = parsed(&text[..len], quote, &self.parse) else {
            return false;
        };
        self.values.push(x.unwrap_or_default());
        self.nulls.append(x.is_some());
        true
    }
    fn finish(&mut self) -> Option<ArrayRef> {
        let next = Vec::with_capacity(self.values.len());
        let values = std::mem::replace(&mut self.values, next);
        let array = PrimitiveArray::<T>::try_new(ScalarBuffer::from(values), self.nulls.finish())
            .ok()?
            .with_data_type(self.data_type.clone());
        Some(Arc::new(array))
    }
    fn clear(&mut self) {
        self.values.clear();
        self.nulls.truncate(0);
    }
}

/// Powers of ten exact in an `f64`.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// `s` as an `f64` when it is a plain decimal (`-?[0-9]*\.?[0-9]*`, a digit at least) whose digits make an
/// integer up to 2^53, with at most 22 of them after the point; otherwise `None` (arrow's
/// parser reads it). The integer and the power of ten are then both exact in an `f64`, so the
/// one division rounds the decimal's value correctly: the value any correct parser, arrow's
/// (lexical) among them, gives. Most numbers in files are such decimals.
fn plain_f64(s: &[u8]) -> Option<f64> {
    let (negative, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, s),
    };
    // At most 19 digits and a point (19 digits make no more than a u64 holds).
    if digits.len() > 20 {
        return None;
    }
    // Where the point is (`None`: no point).
    let mut point = None;
    let mut mantissa = 0u64;
    for (i, &b) in digits.iter().enumerate() {
        let d = b.wrapping_sub(b'0');
        if d < 10 {
            // (20 digits may wrap: they are refused below.)
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
        } else if b == b'.' && point.is_none() {
            point = Some(i);
        } else {
            return None;
        }
    }
    let count = digits.len() - usize::from(point.is_some());
    if count == 0 || count > 19 || mantissa > 1 << 53 {
        return None;
    }
    let after_point = point.map_or(0, |p| digits.len() - p - 1);
    let value = mantissa as f64 / *EXACT_POWERS_OF_TEN.get(after_point)?;
    Some(if negative { -value } else { value })
}

/// `s` as an `i64` when it is a plain integer (`-?[0-9]{1,18}`: it cannot overflow);
/// otherwise `None` (arrow's parser reads it: signs, spaces, longer ones).
fn plain_i64(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n = 0i64;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(b - b'0');
    }
    Some(if negative { -n } else { n })
}

/// arrow-csv's reading of a boolean (its own rule, not arrow-cast's).
fn parse_bool(s: &[u8]) -> Option<bool> {
    if s.eq_ignore_ascii_case(b"false") {
        Some(false)
    } else if s.eq_ignore_ascii_case(b"true") {
        Some(true)
    } else {
        None
    }
}

/// A timestamp column of `t`, read in its time zone (`None`: a zone that does not parse).
fn timestamps<T: ArrowTimestampType>(t: &DataType, tz: Option<&str>) -> Option<Box<dyn Column>> {
    Some(match tz {
        Some(name) => {
            let zone: Tz = name.parse().ok()?;
            typed::<T>(t, move |b| timestamp::<T, _>(&zone, b))
        }
        None => typed::<T>(t, |b| timestamp::<T, _>(&chrono::Utc, b)),
    })
}

/// A timestamp read in `zone`, as arrow-csv reads it.
fn timestamp<T: ArrowTimestampType, Z: chrono::TimeZone>(zone: &Z, b: &[u8]) -> Option<i64> {
    let date = string_to_datetime(zone, text(b)?).ok()?;
    match T::UNIT {
        TimeUnit::Second => Some(date.timestamp()),
        TimeUnit::Millisecond => Some(date.timestamp_millis()),
        TimeUnit::Microsecond => Some(date.timestamp_micros()),
        TimeUnit::Nanosecond => date.timestamp_nanos_opt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::csv_scan::RowFormat;
    use datafusion::arrow::datatypes::Field;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// What a decoder made of a text: its batches up to the first error, and whether one
    /// came (the scan recovers the batch that fails, whichever decoder failed it).
    #[derive(Debug, PartialEq)]
    struct Outcome {
        batches: Vec<RecordBatch>,
        failed: bool,
    }

    /// Either decoder behind the scan's loop: `decode` until it takes nothing, `flush` when
    /// full, the input cut into `chunks`.
    trait Feed {
        fn decode(&mut self, buf: &[u8]) -> ArrowResult<usize>;
        fn full(&self) -> bool;
        fn flush(&mut self) -> ArrowResult<Option<RecordBatch>>;
    }
    impl Feed for FastCsv {
        fn decode(&mut self, buf: &[u8]) -> ArrowResult<usize> {
            FastCsv::decode(self, &Bytes::copy_from_slice(buf))
        }
        fn full(&self) -> bool {
            FastCsv::full(self)
        }
        fn flush(&mut self) -> ArrowResult<Option<RecordBatch>> {
            FastCsv::flush(self)
        }
    }
    impl Feed for Decoder {
        fn decode(&mut self, buf: &[u8]) -> ArrowResult<usize> {
            Decoder::decode(self, buf)
        }
        fn full(&self) -> bool {
            self.capacity() == 0
        }
        fn flush(&mut self) -> ArrowResult<Option<RecordBatch>> {
            Decoder::flush(self)
        }
    }

    fn run(d: &mut dyn Feed, chunks: &[&[u8]]) -> Outcome {
        let mut out = Outcome {
            batches: Vec::new(),
            failed: false,
        };
        let mut step = || -> ArrowResult<()> {
            for chunk in chunks {
                let mut pos = 0;
                while pos < chunk.len() {
                    let n = d.decode(&chunk[pos..])?;
                    pos += n;
                    if d.full() {
                        out.batches.extend(d.flush()?);
                    } else if n == 0 {
                        break;
                    }
                }
                assert_eq!(pos, chunk.len(), "a decoder left bytes of a chunk");
                {}
            }
            d.decode(&[])?;
            out.batches.extend(d.flush()?);
            Ok(())
        };
        out.failed = step().is_err();
        out
    }

    fn config(types: &[DataType], projection: Option<Vec<usize>>, batch: usize) -> CsvScanConfig {
        let fields: Vec<Field> = types
            .iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("c{i}"), t.clone(), true))
            .collect();
        let mut c = crate::source::csv_scan::tests::config(RowFormat::Csv);
        c.file_schema = Arc::new(Schema::new(fields));
        c.rules.comment = None;
        c.batch_size = batch;
        c.file_projection = projection;
        c.max_record_bytes = 1 << 20;
        c
    }

    /// A value of type `t`, now and then quoted, empty, or not of the type.
    fn value_of(rng: &mut StdRng, t: &DataType) -> String {
        let v = match rng.random_range(0..24) {
            0 => String::new(),
            1 => "x\"y".into(),
            2 => "\"a,\n\"\"b\"\"\r\"".into(),
            3 => " 7 ".into(),
            4 => "\"q\"t".into(),
            _ => match t {
                DataType::Int64 => rng.random_range(-100_000i64..100_000).to_string(),
                DataType::UInt8 => rng.random_range(0u16..300).to_string(),
                DataType::Float64 => format!("{:.3}", rng.random_range(-1e6..1e6)),
                DataType::Boolean => {
                    ["true", "FALSE", "True", "yes"][rng.random_range(0..4)].into()
                }
                DataType::Date32 => format!(
                    "20{:02}-0{}-1{}",
                    rng.random_range(0..99),
                    1 + rng.random_range(0..9),
                    rng.random_range(0..10)
                ),
                DataType::Timestamp(..) => format!(
                    "2024-0{}-1{} 1{}:2{}:3{}{}",
                    1 + rng.random_range(0..9),
                    rng.random_range(0..10),
                    rng.random_range(0..10),
                    rng.random_range(0..10),
                    rng.random_range(0..10),
                    ["", ".25", "Z", "+02:00"][rng.random_range(0..4)]
                ),
                _ => ["plain", "é ü", "with space", "1.5", "a\"\"b", "\u{1F600}"]
                    [rng.random_range(0..6)]
                .into(),
            },
        };
        if rng.random_range(0..8) == 0 && !v.starts_with('"') {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v
        }
    }

    /// A CSV text of `rows` records of `types`, with the faults files have now and then: a
    /// row of another width, empty lines, CRLF, a quote inside a field, no last line break,
    /// invalid UTF-8.
    fn text(rng: &mut StdRng, types: &[DataType], rows: usize, noise: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let names: Vec<String> = (0..types.len()).map(|i| format!("c{i}")).collect();
        out.extend_from_slice(names.join(",").as_bytes());
        out.push(b'\n');
        for _ in 0..rows {
            let mut width = types.len();
            if rng.random_range(0..1000) < noise {
                width = rng.random_range(1..types.len() + 2);
            }
            let fields: Vec<String> = (0..width)
                .map(|i| value_of(rng, &types[i.min(types.len() - 1)]))
                .collect();
            out.extend_from_slice(fields.join(",").as_bytes());
            if rng.random_range(0..1000) < noise {
                out.extend_from_slice(
                    [&b"\xff"[..], b"\"", b"\n\n", b"\r"][rng.random_range(0..4)],
                );
            }
            out.extend_from_slice(if rng.random_range(0..4) == 0 {
                b"\r\n"
            } else {
                b"\n"
            });
        }
        // Stray bytes anywhere: quotes where csv-core reads them as text, text after a
        // closing quote, line ends inside fields.
        for b in out.iter_mut() {
            if rng.random_range(0..4000) < noise {
                *b = [b'"', b',', b'\n', b'x'][rng.random_range(0..4)];
            }
        }
        if rng.random_range(0..2) == 0 {
            while out.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                out.pop();
            }
        }
        out
    }

    fn chunked<'a>(rng: &mut StdRng, text: &'a [u8]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len().min(300));
            let (a, b) = rest.split_at(n);
            chunks.push(a);
            rest = b;
        }
        chunks
    }

    /// Text in pieces is UTF-8 exactly when the pieces joined are, on random bytes (valid
    /// characters of every length, cut ones, stray continuation and invalid lead bytes) cut
    /// at random places, characters split over two or three pieces among them.
    #[test]
    fn utf8_in_pieces_is_utf8_joined() {
        let mut rng = StdRng::seed_from_u64(13);
        let parts: [&[u8]; 9] = [
            b"a",
            "é".as_bytes(),
            "€".as_bytes(),
            "\u{1F600}".as_bytes(),
            b"\xe2\x82",
            b"\x80",
            b"\xff",
            b"\xf0\x9f",
            b"\xc3",
        ];
        let (mut valid, mut cut_valid) = (0, 0);
        for _ in 0..20_000 {
            let text: Vec<u8> = (0..rng.random_range(0..12))
                .flat_map(|_| match rng.random_range(0..10) {
                    0..=4 => parts[rng.random_range(0..4)],
                    _ => parts[rng.random_range(0..parts.len())],
                })
                .copied()
                .collect();
            let mut check = Utf8Pieces::default();
            let mut rest = &text[..];
            let mut pieces = 0;
            while !rest.is_empty() {
                let (a, b) = rest.split_at(rng.random_range(1..=rest.len().min(3)));
                check.push(a);
                rest = b;
                pieces += 1;
            }
            let want = std::str::from_utf8(&text).is_ok();
            assert_eq!(check.valid(), want, "{text:?}");
            valid += usize::from(want);
            cut_valid += usize::from(want && pieces > 1 && text.iter().any(|b| *b >= 0x80));
        }
        assert!(valid > 2000 && cut_valid > 1000, "{valid} {cut_valid}");
    }

    /// Plain decimals read as arrow's parser reads them, to the bit, on random strings of
    /// digits, points, signs, exponents and spaces (long ones too); the fast path takes
    /// most of the plain ones.
    #[test]
    fn plain_decimals_read_as_arrows_parser_reads_them() {
        let mut rng = StdRng::seed_from_u64(11);
        let (mut fast, mut total) = (0, 0);
        for _ in 0..200_000 {
            let len = rng.random_range(0..24);
            let s: String = (0..len)
                .map(|_| match rng.random_range(0..40) {
                    0 => '-',
                    1 => '+',
                    2 => 'e',
                    3 => ' ',
                    4..=7 => '.',
                    _ => char::from(b'0' + rng.random_range(0..10u8)),
                })
                .collect();
            let want = Float64Type::parse(&s);
            if let Some(got) = plain_f64(s.as_bytes()) {
                fast += 1;
                assert_eq!(Some(got.to_bits()), want.map(f64::to_bits), "{s:?}");
            }
            total += 1;
        }
        // Decimals as files hold them: the fast path reads nearly all.
        for _ in 0..100_000 {
            let x: f64 = rng.random_range(-1e7..1e7);
            let s = format!("{x:.*}", rng.random_range(0..8));
            let got = plain_f64(s.as_bytes()).map(f64::to_bits);
            if got.is_some() {
                fast += 1;
            }
            assert!(
                got.is_none() || got == Float64Type::parse(&s).map(f64::to_bits),
                "{s}"
            );
        }
        assert!(fast > 100_000 && total == 200_000, "{fast}");
    }

    /// Plain integers read as arrow's parser reads them, on random strings of digits, signs
    /// and spaces (long ones too); the fast path takes the plain ones.
    #[test]
    fn plain_integers_read_as_arrows_parser_reads_them() {
        let mut rng = StdRng::seed_from_u64(12);
        let mut fast = 0;
        for _ in 0..200_000 {
            let len = rng.random_range(0..22);
            let s: String = (0..len)
                .map(|i| match rng.random_range(0..30) {
                    0 => '-',
                    1 => '+',
                    2 => ' ',
                    3 if i > 0 => 'x',
                    _ => char::from(b'0' + rng.random_range(0..10u8)),
                })
                .collect();
            let want = Int64Type::parse(&s);
            if let Some(got) = plain_i64(s.as_bytes()) {
                fast += 1;
                assert_eq!(Some(got), want, "{s:?}");
            }
        }
        for v in [i64::MIN, i64::MAX, -999_999_999_999_999_999, 0, -0] {
            let s = v.to_string();
            let got = plain_i64(s.as_bytes());
            assert!(got.is_none() || got == Int64Type::parse(&s), "{s}");
        }
        assert!(fast > 20_000, "{fast}");
    }

    /// The fast decoder makes exactly arrow's batches (or fails the batch arrow fails) on
    /// random CSV text with random faults, projections, batch sizes and chunkings; and it
    /// takes the fast path for most batches of clean text.
    #[test]
    fn the_fast_decoder_agrees_with_arrows() {
        let mut rng = StdRng::seed_from_u64(7);
        let all = [
            DataType::Int64,
            DataType::Utf8,
            DataType::Float64,
            DataType::Boolean,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Nanosecond, Some("+01:00".into())),
            DataType::UInt8,
        ];
        let (mut fast_batches, mut fast_headed, mut compared, mut failed) = (0, 0, 0, 0);
        for case in 0..1500 {
            let width = rng.random_range(1..5);
            let types: Vec<DataType> = (0..width)
                .map(|_| all[rng.random_range(0..all.len())].clone())
                .collect();
            let projection = match rng.random_range(0..3) {
                0 => None,
                _ => Some((0..width).filter(|_| rng.random_range(0..2) == 0).collect()),
            };
            let noise = [0, 0, 5, 50][rng.random_range(0..4)];
            let rows = rng.random_range(0..60);
            let data = text(&mut rng, &types, rows, noise);
            let chunks = chunked(&mut rng, &data);
            let header = rng.random_range(0..3) != 0;
            let cfg = config(&types, projection, rng.random_range(1..8));
            let mut fast = FastCsv::new(&cfg, header).expect("the fast decoder applies");
            let mut arrow = cfg.arrow_csv(header).expect("arrow's decoder");
            let got = run(&mut fast, &chunks);
            let want = run(&mut arrow, &chunks);
            assert_eq!(
                got,
                want,
                "case {case}: {:?} over {:?}",
                types,
                String::from_utf8_lossy(&data)
            );
            compared += want.batches.len();
            failed += usize::from(want.failed);
            if noise == 0 {
                fast_batches += fast.fast;
                fast_headed += fast.fast_headed;
            }
        }
        assert!(
            compared > 3000 && failed > 100,
            "{compared} batches, {failed} failed"
        );
        // The header's names are no values: a batch that starts with them is fast too.
        assert!(
            fast_batches > 1000 && fast_headed > 100,
            "{fast_batches} fast batches, {fast_headed} with the header"
        );
    }
}
