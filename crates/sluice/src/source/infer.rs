//! Per-file schema inference: every file is sampled (not just the first one).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use datafusion_orc::OrcFormat;

use super::dialect::{self, Dialect};
use super::framer::{each_record, CsvRules, RecordScan};
use super::resolve::InputFile;
use crate::error::{Error, Result};
use crate::storage::format::{CsvOptions, Format};

/// The DataFusion [`FileFormat`] that reads `file` with the user's options.
///
/// `newlines_in_values` only matters for CSV: it turns off byte-range splitting.
/// A CSV file reads with its detected `dialect` (or the options' defaults without one).
pub fn file_format(
    file: &InputFile,
    csv: &CsvOptions,
    infer_rows: usize,
    newlines_in_values: bool,
    dialect: Option<&Dialect>,
) -> Result<Arc<dyn FileFormat>> {
    let compression = file.compression.to_datafusion();
    Ok(match file.format {
        Format::Csv => {
            let null_regex = csv
                .null_value
                .as_ref()
                .map(|v| format!("^{}$", regex::escape(v)));
            let (rules, header) = match dialect {
                Some(d) => (d.rules, d.header),
                None => (csv.rules_for(&file.display), csv.header_or_default()),
            };
            Arc::new(
                CsvFormat::default()
                    .with_has_header(header)
                    .with_delimiter(rules.delimiter)
                    .with_quote(rules.quote)
                    .with_escape(rules.escape)
                    .with_comment(rules.comment)
                    .with_null_regex(null_regex)
                    .with_newlines_in_values(newlines_in_values)
                    .with_file_compression_type(compression)
                    .with_schema_infer_max_rec(infer_rows),
            )
        }
        Format::Ndjson => Arc::new(
            JsonFormat::default()
                .with_file_compression_type(compression)
                .with_schema_infer_max_rec(infer_rows),
        ),
        Format::Parquet => Arc::new(ParquetFormat::default().with_force_view_types(false)),
        Format::Orc => Arc::new(OrcFormat),
    })
}

/// The object-store location of a local file.
pub fn store_path(file: &InputFile) -> Result<StorePath> {
    match &file.key {
        Some(key) => Ok(key.clone()),
        None => {
            StorePath::from_absolute_path(&file.path).map_err(|e| Error::file(&file.display, e))
        }
    }
}

/// The object-store metadata of a local file.
pub fn object_meta(file: &InputFile) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        location: store_path(file)?,
        last_modified: chrono::Utc::now(),
        size: file.size,
        e_tag: None,
        version: None,
    })
}

/// Infers one file's schema from a sample of its rows (or its footer, for Parquet and ORC),
/// and a CSV file's dialect.
///
/// A remote text file is sampled from its first 256 KiB; when that is not enough (a sample
/// cut inside a compressed stream, rows wider than it), from its first 4 MiB.
pub async fn infer_file_schema(
    state: &dyn Session,
    store: &Arc<dyn ObjectStore>,
    file: &InputFile,
    csv: &CsvOptions,
    infer_rows: usize,
) -> Result<(SchemaRef, Option<Dialect>)> {
    if file.size == 0 {
        return Err(Error::file(&file.display, "file is empty"));
    }
    let first = SampleSource::of(store, file, REMOTE_SAMPLE_FIRST).await?;
    match infer_from(state, store, file, csv, infer_rows, first).await {
        Err(_) if file.is_remote() && file.size > REMOTE_SAMPLE_FIRST => {
            let more = SampleSource::of(store, file, REMOTE_SAMPLE).await?;
            infer_from(state, store, file, csv, infer_rows, more).await
        }
        other => other,
    }
}

async fn infer_from(
    state: &dyn Session,
    store: &Arc<dyn ObjectStore>,
    file: &InputFile,
    csv: &CsvOptions,
    infer_rows: usize,
    sample: SampleSource,
) -> Result<(SchemaRef, Option<Dialect>)> {
    let mut dialect = None;
    let schema = if file.format == Format::Ndjson {
        let (src, compression, display) = (sample.clone(), file.compression, file.display.clone());
        tokio::task::spawn_blocking(move || {
            infer_ndjson(&src, compression, infer_rows).map_err(|e| Error::file(&display, e))
        })
        .await
        .map_err(|e| Error::file(&file.display, e))??
    } else if file.format == Format::Csv {
        let (src, compression, display) = (sample.clone(), file.compression, file.display.clone());
        let ask = Ask {
            fixed: dialect::Fixed::of(csv, &file.display),
            default_delimiter: csv.delimiter_for(&file.display),
            null_value: csv.null_value.clone(),
            rows: infer_rows,
        };
        let (schema, found) = tokio::task::spawn_blocking(move || {
            infer_csv(&src, compression, &ask).map_err(|e| Error::file(&display, e))
        })
        .await
        .map_err(|e| Error::file(&file.display, e))??;
        dialect = Some(found);
        schema
    } else {
        if file.format == Format::Parquet {
            check_parquet_footer(store, file).await?;
        }
        let format = file_format(file, csv, infer_rows, false, None)?;
        let meta = object_meta(file)?;
        let schema = format
            .infer_schema(state, store, &[meta])
            .await
            .map_err(|e| Error::file(&file.display, clean_engine_error(&e)))?;
        schema.as_ref().clone()
    };
    let mut schema = normalize_inferred(&schema, file.format);
    if file.format == Format::Ndjson {
        let (src, compression) = (sample.clone(), file.compression);
        schema = tokio::task::spawn_blocking(move || {
            super::temporal::refine_json_schema(&src, compression, &schema, infer_rows)
        })
        .await
        .map_err(|e| Error::file(&file.display, e))?;
    }
    Ok((Arc::new(schema), dialect))
}

/// Where a sampler reads a file: the local file itself, or the first bytes of a remote
/// object, fetched once.
#[derive(Debug, Clone)]
pub enum SampleSource {
    /// A local file.
    Local(std::path::PathBuf),
    /// The fetched start of a remote object, and whether it is the whole object.
    Fetched(bytes::Bytes, bool),
}

/// Bytes of a remote object fetched for schema sampling at first.
const REMOTE_SAMPLE_FIRST: u64 = 256 << 10;

/// Bytes fetched when the first sample was not enough.
const REMOTE_SAMPLE: u64 = 4 << 20;

impl SampleSource {
    /// The source for `file`: local files are read in place; remote ones have their first
    /// `limit` bytes fetched.
    pub async fn of(
        store: &Arc<dyn ObjectStore>,
        file: &InputFile,
        limit: u64,
    ) -> Result<SampleSource> {
        match &file.key {
            // Columnar files are read through the store by DataFusion (footers only).
            _ if !file.format.is_text() => Ok(SampleSource::Fetched(bytes::Bytes::new(), true)),
            None => Ok(SampleSource::Local(file.path.clone())),
            Some(key) => {
                let end = file.size.min(limit);
                let bytes = store
                    .get_range(key, 0..end)
                    .await
                    .map_err(|e| super::remote::store_error(&file.display, e))?;
                Ok(SampleSource::Fetched(bytes, end == file.size))
            }
        }
    }

    /// A reader over the (compressed) bytes.
    pub fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        Ok(match self {
            SampleSource::Local(p) => Box::new(std::fs::File::open(p)?),
            SampleSource::Fetched(b, _) => Box::new(std::io::Cursor::new(b.clone())),
        })
    }

    /// The sample's bytes, decompressed. The fetched start of a compressed object ends
    /// mid-stream: there the decoder's error is the end of the sample, not a fault.
    pub fn reader(
        &self,
        compression: crate::storage::format::Compression,
    ) -> std::result::Result<Box<dyn std::io::Read + Send>, String> {
        let file = self.open().map_err(|e| e.to_string())?;
        let reader = compression
            .to_datafusion()
            .convert_read(file)
            .map_err(|e| e.to_string())?;
        Ok(if self.complete() {
            reader
        } else {
            Box::new(EndsAtError(Some(reader)))
        })
    }

    /// True when the sample is the whole file: its end is the file's end. Otherwise its last
    /// record may be cut off (and a compressed stream ends abruptly).
    pub fn complete(&self) -> bool {
        match self {
            SampleSource::Local(_) => true,
            SampleSource::Fetched(_, complete) => *complete,
        }
    }
}

/// A reader whose first error is its end (a cut-off sample).
struct EndsAtError<R>(Option<R>);

impl<R: std::io::Read> std::io::Read for EndsAtError<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(r) = &mut self.0 else { return Ok(0) };
        match r.read(buf) {
            Err(_) => {
                self.0 = None;
                Ok(0)
            }
            ok => ok,
        }
    }
}

/// Checks a Parquet file's magic bytes and footer length before the parquet crate reads it
/// (it panics, in debug builds, on a footer length larger than the file).
async fn check_parquet_footer(store: &Arc<dyn ObjectStore>, file: &InputFile) -> Result<()> {
    let bad = |why: &str| Error::file(&file.display, format!("not a valid Parquet file: {why}"));
    if file.size < 12 {
        return Err(bad("too short"));
    }
    let location = store_path(file)?;
    let read = |r: std::ops::Range<u64>| {
        let location = location.clone();
        async move {
            store
                .get_range(&location, r)
                .await
                .map_err(|e| super::remote::store_error(&file.display, e))
        }
    };
    let head = read(0..4).await?;
    let tail = read(file.size - 8..file.size).await?;
    if &head[..] != b"PAR1" || &tail[4..] != b"PAR1" {
        return Err(bad("no PAR1 magic at both ends"));
    }
    let footer = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    if footer + 12 > file.size {
        return Err(bad("the footer length is larger than the file (cut off?)"));
    }
    Ok(())
}

/// Infers an NDJSON file's schema from its first `rows` lines that are JSON objects (bad
/// lines are reported when the data is read; they must not decide the types).
fn infer_ndjson(
    src: &SampleSource,
    compression: crate::storage::format::Compression,
    rows: usize,
) -> std::result::Result<Schema, String> {
    use std::io::{BufRead, Read};
    let reader = src.reader(compression)?;
    let mut good = Vec::new();
    let mut kept = 0;
    // Keys whose values are of several kinds (scalar, list, object): they meet at string.
    let mut kinds: std::collections::HashMap<String, u8> = std::collections::HashMap::new();
    let mut reader = std::io::BufReader::new(reader);
    let mut read_any = false;
    let mut line = Vec::new();
    let mut sampled = 0usize;
    while kept < rows && sampled < MAX_SAMPLE_BYTES {
        line.clear();
        // A line longer than the sample bound is not held whole: it is skipped (the scan
        // rejects it as too large).
        let n = (&mut reader)
            .take(MAX_SAMPLE_BYTES as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read: {e}"))?;
        if n == 0 {
            break;
        }
        sampled += n;
        read_any = true;
        // The cut-off end of a partial sample is no line.
        if !line.ends_with(b"\n") && !src.complete() {
            break;
        }
        if !line.ends_with(b"\n") && n == MAX_SAMPLE_BYTES {
            break;
        }
        if line.ends_with(b"\n") {
            line.pop();
        }
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&line) {
            for (k, v) in &map {
                let kind = match v {
                    serde_json::Value::Null => 0,
                    serde_json::Value::Array(_) => 2,
                    serde_json::Value::Object(_) => 4,
                    _ => 1,
                };
                *kinds.entry(k.clone()).or_default() |= kind;
            }
            good.extend_from_slice(&line);
            good.push(b'\n');
            kept += 1;
        }
    }
    if !read_any {
        return Err("file is empty".into());
    }
    let schema = match datafusion::arrow::json::reader::infer_json_schema(&good[..], Some(rows)) {
        Ok((schema, _)) => schema,
        // arrow cannot merge a scalar with an object or a list in one key: infer key by key.
        Err(_) => infer_ndjson_by_key(&good),
    };
    // arrow reads `"ok"` next to `["x"]` as a list (and then refuses "ok"): a key whose
    // values are of several kinds is a string, nested values held as JSON text.
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match kinds.get(f.name()) {
            Some(k) if k.count_ones() > 1 => Field::new(f.name(), DataType::Utf8, true),
            _ => f.as_ref().clone(),
        })
        .collect();
    Ok(Schema::new(fields))
}

/// Infers each top-level key of NDJSON `lines` on its own; keys in first-seen order.
fn infer_ndjson_by_key(lines: &[u8]) -> Schema {
    use datafusion::arrow::json::reader::infer_json_schema;
    let objects: Vec<serde_json::Map<String, serde_json::Value>> = lines
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    let mut keys: Vec<&String> = Vec::new();
    for o in &objects {
        for k in o.keys() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let fields: Vec<Field> = keys
        .iter()
        .map(|key| {
            let mut text = Vec::new();
            for v in objects.iter().filter_map(|o| o.get(*key)) {
                let one = serde_json::json!({ key.as_str(): v });
                text.extend_from_slice(one.to_string().as_bytes());
                text.push(b'\n');
            }
            infer_json_schema(&text[..], None)
                .ok()
                .and_then(|(s, _)| s.fields().first().map(|f| f.as_ref().clone()))
                .unwrap_or_else(|| Field::new(key.as_str(), DataType::Utf8, true))
        })
        .collect();
    Schema::new(fields)
}

/// What a CSV sample is asked: what the user fixed, the default delimiter, the NULL
/// string and the rows to sample.
struct Ask {
    fixed: dialect::Fixed,
    default_delimiter: u8,
    null_value: Option<String>,
    rows: usize,
}

/// arrow-csv's reader format for `dialect`.
fn arrow_csv_format(
    dialect: &Dialect,
    null_value: Option<&str>,
) -> std::result::Result<datafusion::arrow::csv::reader::Format, String> {
    let rules = dialect.rules;
    let mut format = datafusion::arrow::csv::reader::Format::default()
        .with_header(dialect.header)
        .with_delimiter(rules.delimiter)
        .with_quote(rules.quote);
    if let Some(e) = rules.escape {
        format = format.with_escape(e);
    }
    if let Some(c) = rules.comment {
        format = format.with_comment(c);
    }
    if let Some(v) = null_value {
        let re = regex::Regex::new(&format!("^({}|)$", regex::escape(v)))
            .map_err(|e| format!("null value '{v}': {e}"))?;
        format = format.with_null_regex(re);
    }
    Ok(format)
}

/// Bytes read at a time while sampling a CSV file (the sample stops at the rows asked for).
const SAMPLE_CHUNK: usize = 64 << 10;

/// Infers a CSV file's dialect from its start ([`dialect::detect`]), then its schema from
/// its first `rows` records after the preamble (decompressing as needed).
///
/// The sample is read in 64 KiB steps until it holds `rows` whole records or the file
/// ends, then cut after the last line break outside quotes, so a record is never cut in
/// half.
fn infer_csv(
    src: &SampleSource,
    compression: crate::storage::format::Compression,
    ask: &Ask,
) -> std::result::Result<(Schema, Dialect), String> {
    use std::io::Read;
    let mut reader = src.reader(compression)?;
    let mut sample: Vec<u8> = Vec::new();
    let mut eof = false;
    // Reads up to `want` more bytes into the sample: false at the end of the file.
    let mut more = |sample: &mut Vec<u8>, want: usize| -> std::result::Result<usize, String> {
        let start = sample.len();
        sample.resize(start + want, 0);
        let mut filled = start;
        while filled < sample.len() {
            let n = reader
                .read(&mut sample[filled..])
                .map_err(|e| format!("cannot read: {e}"))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        sample.truncate(filled);
        Ok(filled - start)
    };
    let got = more(&mut sample, dialect::DETECT_BYTES)?;
    if got < dialect::DETECT_BYTES {
        eof = true;
    }
    let found = dialect::detect(
        &sample,
        eof && src.complete(),
        &ask.fixed,
        ask.default_delimiter,
    );
    let rules = found.rules;
    let rows = ask.rows;
    // The preamble is no record of the file.
    sample.drain(..(found.preamble as usize).min(sample.len()));
    // Records are framed as the reader frames them (csv-core's rules: `5" screen` holds a
    // literal quote), so the sample ends where a record does.
    let mut scanner = RecordScan::csv(rules, 0);
    scanner.over(&sample, u64::MAX / 2);
    // One more record than asked for covers the header line. The sample is bounded in bytes
    // too: a file of a few gigantic rows must not be read whole to guess its types.
    while !eof && (scanner.records as usize) < rows + 1 && sample.len() < MAX_SAMPLE_BYTES {
        let start = sample.len();
        if more(&mut sample, SAMPLE_CHUNK)? < SAMPLE_CHUNK {
            eof = true;
        }
        scanner.over(&sample[start..], u64::MAX / 2);
    }
    // A sample that is not the whole file ends inside a record: the part is not one.
    let end = if scanner.records as usize > rows || !eof || !src.complete() {
        sample_cut(&scanner, &sample, rows)
    } else {
        sample.len()
    };
    if end == 0 {
        return Err(format!(
            "the first record is longer than {} MiB: not a CSV file sluice can sample",
            MAX_SAMPLE_BYTES >> 20
        ));
    }
    let trailing = found.trailing.then_some(found.columns);
    if found.unnamed_first {
        // The header gets an empty first name (read as `column_1`).
        sample.insert(0, rules.delimiter);
    }
    let end = end + usize::from(found.unnamed_first);
    let clean = well_formed_rows(&sample[..end], rules, trailing);
    let null_value = ask.null_value.as_deref();
    let schema = match super::guess::infer(&clean, rules, found.header, rows, null_value) {
        Some(schema) => schema,
        None => {
            let format = arrow_csv_format(&found, null_value)?;
            format
                .infer_schema(&clean[..], Some(rows))
                .map_err(|e| e.to_string().trim_start_matches("Csv error: ").to_string())?
                .0
        }
    };
    if schema.fields().len() > MAX_COLUMNS {
        return Err(format!(
            "has {} columns, more than the {MAX_COLUMNS} sluice reads",
            schema.fields().len()
        ));
    }
    Ok((schema, found))
}

/// Most columns a CSV file may have (a header line of millions of fields is a wrong
/// delimiter or not CSV at all).
pub const MAX_COLUMNS: usize = 100_000;

/// Most bytes sampled from one CSV file to infer its types.
const MAX_SAMPLE_BYTES: usize = 64 << 20;

/// The sample without rows that would stop inference: rows whose field count differs from
/// the first row's, and rows that are not UTF-8. (Those rows are reported when the data is
/// read; they must not decide the types.) Where rows end with a delimiter (`trailing`: the
/// file's columns), a record one field wider whose last field is blank is kept without it.
fn well_formed_rows(data: &[u8], rules: CsvRules, trailing: Option<usize>) -> Vec<u8> {
    let mut kept = Vec::with_capacity(data.len());
    let (mut start, mut expected) = (0usize, None);
    each_record(data, true, rules, |r| {
        let mut row = &data[start..r.end];
        let mut width = r.width();
        if trailing.is_some_and(|c| width == c + 1)
            && r.fields().last().is_some_and(super::dialect::is_blank)
        {
            if let Some(cut) = without_last_field(row, rules) {
                row = cut;
                width -= 1;
            }
        }
        if *expected.get_or_insert(width) == width && std::str::from_utf8(row).is_ok() {
            kept.extend_from_slice(row);
            // A record ended by `\r` alone gets a line feed; the file's last one keeps its end.
            if !row.ends_with(b"\n") && r.end < data.len() {
                kept.push(b'\n');
            }
        }
        start = r.end;
        true
    });
    kept
}

/// A record's bytes without its blank last field and the delimiter before it (and without
/// its line break), `None` when its end is not such a field.
fn without_last_field(row: &[u8], rules: CsvRules) -> Option<&[u8]> {
    let mut end = row.len();
    while end > 0 && matches!(row[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    // A blank field as written: white space, maybe quoted (`""`, `"` + a line break + `"`).
    while end > 0
        && row[end - 1] != rules.delimiter
        && (row[end - 1].is_ascii_whitespace() || row[end - 1] == rules.quote)
    {
        end -= 1;
    }
    (end > 0 && row[end - 1] == rules.delimiter).then(|| &row[..end - 1])
}

/// Where a sample of `rows` records plus the header ends: just after that record's line
/// break, or after the last whole record framed when there are fewer (0: none).
fn sample_cut(scanner: &RecordScan, sample: &[u8], rows: usize) -> usize {
    let Some(&end) = scanner.ends.get(rows).or(scanner.ends.back()) else {
        return 0;
    };
    // Past the record's line break (`\n`, `\r\n` or `\r`), as csv-core ends it.
    let mut end = end as usize;
    if sample.get(end) == Some(&b'\r') {
        end += 1;
    }
    if sample.get(end) == Some(&b'\n') {
        end += 1;
    }
    end
}

/// Nesting levels an inferred NDJSON column may have; deeper ones are read as JSON text.
pub const MAX_INFERRED_DEPTH: usize = 16;

/// Levels of nesting of a type (a scalar is 0, a list of scalars 1).
fn type_depth(dt: &DataType) -> usize {
    match dt {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => 1 + type_depth(f.data_type()),
        DataType::Struct(fields) => {
            1 + fields
                .iter()
                .map(|f| type_depth(f.data_type()))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// Makes inferred types consistent across formats and engines.
///
/// * Timestamps inferred from text become microsecond precision: Parquet has no second unit
///   (DataFusion would write a bare INT64), and microseconds are Spark's and DuckDB's native unit.
/// * Header names lose a UTF-8 byte-order mark and surrounding whitespace.
/// * NDJSON structures nested deeper than [`MAX_INFERRED_DEPTH`] are read as JSON text.
fn normalize_inferred(schema: &Schema, format: Format) -> Schema {
    let mut seen = std::collections::HashSet::new();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut name = f.name().trim_start_matches('\u{feff}').trim().to_string();
            if name.is_empty() {
                name = format!("column_{}", i + 1);
            }
            // Repeated header names get a suffix, as in DuckDB: a, a_1, a_2.
            if !seen.insert(name.clone()) {
                let mut n = 1;
                while !seen.insert(format!("{name}_{n}")) {
                    n += 1;
                }
                name = format!("{name}_{n}");
            }
            let dt = match (format.is_text(), f.data_type()) {
                (true, DataType::Timestamp(_, tz)) => {
                    DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
                }
                // Structures nested deeper than writers and readers recurse safely are kept
                // as JSON text.
                (true, dt) if type_depth(dt) > MAX_INFERRED_DEPTH => DataType::Utf8,
                (_, dt) => dt.clone(),
            };
            Field::new(name, dt, true)
        })
        .collect();
    Schema::new(fields)
}

/// Engine errors carry nested context; keep the innermost, readable part.
/// Why reading a file failed, in words: an object that disappeared after it was listed is
/// named as such.
pub fn read_error(e: &datafusion::error::DataFusionError) -> String {
    if let datafusion::error::DataFusionError::ObjectStore(inner) = e.find_root() {
        if matches!(
            inner.as_ref(),
            datafusion::object_store::Error::NotFound { .. }
        ) {
            return "the file vanished during the run (deleted or moved after it was listed)"
                .to_string();
        }
    }
    clean_engine_error(e)
}

/// An engine error without DataFusion's wrapping prefixes.
pub fn clean_engine_error(e: &datafusion::error::DataFusionError) -> String {
    let s = e.find_root().to_string();
    s.strip_prefix("Arrow error: ")
        .or_else(|| s.strip_prefix("External error: "))
        .or_else(|| s.strip_prefix("Execution error: "))
        .or_else(|| s.strip_prefix("IO error: "))
        .unwrap_or(&s)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    // regression: the sampler toggled "inside quotes" at every quote, so a literal quote
    // (`5" screen`, which csv-core and the reader take as text) hid every later line break:
    // a big file's sample then ended before that row, and up to 64 MiB were read to find it.
    #[test]
    fn the_sample_ends_where_the_reader_sees_records_end() {
        let data = b"id,desc,price\n1,plain,10\n2,5\" screen,20\n3,plain,30\n4,x,40\r\n5,\"a\nb\",50\n6,y,60\n";
        let rules = CsvRules {
            delimiter: b',',
            quote: b'"',
            escape: None,
            comment: None,
        };
        let mut scanner = RecordScan::csv(rules, 0);
        scanner.over(data, u64::MAX / 2);
        assert_eq!(scanner.records, 7);
        let text = |rows: usize| {
            std::str::from_utf8(&data[..sample_cut(&scanner, data, rows)]).unwrap_or("not UTF-8")
        };
        // The header and 3 rows, the literal quote included.
        assert_eq!(
            text(3),
            "id,desc,price\n1,plain,10\n2,5\" screen,20\n3,plain,30\n"
        );
        // A quoted line break is inside its record; `\r\n` ends one.
        assert_eq!(
            text(5),
            "id,desc,price\n1,plain,10\n2,5\" screen,20\n3,plain,30\n4,x,40\r\n5,\"a\nb\",50\n"
        );
        // Fewer records than asked for: the last whole one.
        assert_eq!(text(100), std::str::from_utf8(data).unwrap_or("not UTF-8"));
        // A header alone (with or without its line break) is kept: it names the columns.
        assert_eq!(
            String::from_utf8(well_formed_rows(
                b"a,b",
                CsvRules {
                    delimiter: b',',
                    quote: b'"',
                    escape: None,
                    comment: None
                },
                None
            )),
            Ok("a,b".to_string())
        );
    }
}
