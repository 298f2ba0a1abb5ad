//! Per-stream file writers: one output partition stream becomes one file, or one file per
//! Hive partition folder it sees.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;
use futures::StreamExt;

use super::{hive, WriteProgress, WrittenFile};
use crate::error::{blocking, Error, Result};
use crate::storage::format::Format;

/// Parquet compression codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParquetCompression {
    /// zstd (the default): small files, fast to read.
    #[default]
    Zstd,
    /// Snappy: Spark's default.
    Snappy,
    /// gzip.
    Gzip,
    /// LZ4 (raw).
    Lz4,
    /// No compression.
    None,
}

impl FromStr for ParquetCompression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "zstd" => Ok(ParquetCompression::Zstd),
            "snappy" => Ok(ParquetCompression::Snappy),
            "gzip" => Ok(ParquetCompression::Gzip),
            "lz4" => Ok(ParquetCompression::Lz4),
            "none" | "uncompressed" => Ok(ParquetCompression::None),
            other => Err(Error::Config(format!(
                "compression must be zstd, snappy, gzip, lz4 or none, not '{other}'"
            ))),
        }
    }
}

impl ParquetCompression {
    fn codec(self) -> Compression {
        match self {
            ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::Gzip => Compression::GZIP(Default::default()),
            ParquetCompression::Lz4 => Compression::LZ4_RAW,
            ParquetCompression::None => Compression::UNCOMPRESSED,
        }
    }
}

/// What one writer task produces.
#[derive(Debug, Clone)]
pub struct PartSpec {
    /// The staging folder.
    pub dir: PathBuf,
    /// File name of each file this task writes.
    pub name: String,
    /// Schema of the incoming batches (partition columns included).
    pub schema: SchemaRef,
    /// Output format.
    pub format: Format,
    /// Parquet codec.
    pub compression: ParquetCompression,
    /// Hive partition columns.
    pub partition_by: Vec<String>,
    /// Where rows go whose partition value cannot be a folder name (too long).
    pub rejects: Option<Arc<crate::ledger::rejects::Rejects>>,
    /// The task writing (its rejected rows are written and counted under it).
    pub task: crate::ledger::rejects::Task,
}

/// Longest partition folder name (`col=value`, escaped) in bytes: the usual file-name limit
/// of local file systems (ext4, xfs, APFS, NTFS). A longer one is a row reject.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// A file that computes the CRC-32 of what is written to it.
struct HashingFile {
    file: File,
    hasher: crc32fast::Hasher,
}

impl std::io::Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

type Out = BufWriter<HashingFile>;

enum FileWriter {
    /// A Parquet file before its first batch, which chooses the writer's settings (see
    /// [`parquet_properties`]); the codec to write it with.
    ParquetUnstarted(Option<Out>, Compression),
    Parquet(Box<ArrowWriter<Out>>),
    Csv(Box<datafusion::arrow::csv::Writer<Out>>),
    Json(datafusion::arrow::json::LineDelimitedWriter<Out>),
}

struct OpenFile {
    rel: String,
    abs: PathBuf,
    schema: SchemaRef,
    writer: FileWriter,
    rows: u64,
}

impl OpenFile {
    fn create(spec: &PartSpec, rel: String, schema: &SchemaRef) -> Result<OpenFile> {
        let abs = spec.dir.join(&rel);
        if let Some(parent) = abs.parent() {
            super::commit::create_job_dir(parent)?;
        }
        let file = File::create(&abs).map_err(|e| Error::io(abs.display().to_string(), e))?;
        let out = BufWriter::with_capacity(
            1 << 20,
            HashingFile {
                file,
                hasher: crc32fast::Hasher::new(),
            },
        );
        let writer = match spec.format {
            Format::Parquet => FileWriter::ParquetUnstarted(Some(out), spec.compression.codec()),
            Format::Csv => FileWriter::Csv(Box::new(
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out),
            )),
            Format::Ndjson => {
                FileWriter::Json(datafusion::arrow::json::LineDelimitedWriter::new(out))
            }
            Format::Orc => {
                return Err(Error::Config("ORC output is not supported".into()));
            }
        };
        let mut f = OpenFile {
            rel,
            abs,
            schema: Arc::clone(schema),
            writer,
            rows: 0,
        };
        if let FileWriter::Csv(w) = &mut f.writer {
            // An empty CSV still gets its header line.
            w.write(&RecordBatch::new_empty(Arc::clone(schema)))?;
        }
        Ok(f)
    }

    /// The Parquet writer of a file not started yet, its settings chosen from `first`.
    fn start(&mut self, first: Option<&RecordBatch>) -> Result<()> {
        if let FileWriter::ParquetUnstarted(out, codec) = &mut self.writer {
            let props = parquet_properties(&self.schema, *codec, first);
            let out = out.take().ok_or_else(|| {
                Error::io(
                    self.abs.display().to_string(),
                    std::io::Error::other("the Parquet writer was lost"),
                )
            })?;
            let writer = ArrowWriter::try_new(out, Arc::clone(&self.schema), Some(props))?;
            self.writer = FileWriter::Parquet(Box::new(writer));
        }
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.start(Some(batch))?;
        match &mut self.writer {
            FileWriter::ParquetUnstarted(..) => {}
            FileWriter::Parquet(w) => w.write(batch)?,
            FileWriter::Csv(w) => w.write(batch)?,
            FileWriter::Json(w) => w.write(batch)?,
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn finish(mut self) -> Result<WrittenFile> {
        self.start(None)?;
        let flush = |mut out: Out| -> Result<u32> {
            use std::io::Write;
            out.flush()
                .map_err(|e| Error::io(self.abs.display().to_string(), e))?;
            let inner = out
                .into_inner()
                .map_err(|e| Error::io(self.abs.display().to_string(), e.into_error()))?;
            inner
                .file
                .sync_all()
                .map_err(|e| Error::io(self.abs.display().to_string(), e))?;
            Ok(inner.hasher.finalize())
        };
        let crc32 = match self.writer {
            FileWriter::ParquetUnstarted(..) => {
                return Err(Error::io(
                    self.abs.display().to_string(),
                    std::io::Error::other("the Parquet writer was never started"),
                ))
            }
            FileWriter::Parquet(w) => flush(w.into_inner()?)?,
            FileWriter::Csv(w) => flush(w.into_inner())?,
            FileWriter::Json(mut w) => {
                w.finish()?;
                flush(w.into_inner())?
            }
        };
        let bytes = std::fs::metadata(&self.abs)
            .map_err(|e| Error::io(self.abs.display().to_string(), e))?
            .len();
        Ok(WrittenFile {
            path: self.rel,
            rows: self.rows,
            bytes,
            crc32,
        })
    }
}

/// Rows of the first batch whose values decide whether a column gets a dictionary.
const DICTIONARY_SAMPLE: usize = 8192;

/// The Parquet writer's settings for a file whose first batch is `first`. A column written
/// with a dictionary that cannot hold it (the values seldom repeat) costs hashing every value
/// into the dictionary up to its page limit in every row group, for nothing: the writer then
/// drops it (14% of the CPU of a mostly-float ingest for the floats, 10% for unique integers
/// after that). Floats, and any column whose values in the first batch's first
/// [`DICTIONARY_SAMPLE`] rows (when it has half that many or more) are over 90% distinct, are
/// written without one; the rest keep the default. A column of a few thousand values repeated
/// (country codes, categories) stays under the bar: 3,000 values drawn 8,192 times give about
/// 2,800 distinct, 34%.
fn parquet_properties(
    schema: &SchemaRef,
    codec: Compression,
    first: Option<&RecordBatch>,
) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(codec)
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")));
    for (i, field) in schema.fields().iter().enumerate() {
        let column = first.and_then(|b| b.columns().get(i));
        if field.data_type().is_floating() || column.is_some_and(nearly_unique) {
            props =
                props.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
    }
    props.build()
}

/// The first [`DICTIONARY_SAMPLE`] values of `column` are over 90% distinct (false for a
/// sample under half that size, or a type that does not hash).
fn nearly_unique(column: &ArrayRef) -> bool {
    let n = column.len().min(DICTIONARY_SAMPLE);
    if n < DICTIONARY_SAMPLE / 2 {
        return false;
    }
    let sample = column.slice(0, n);
    let mut hashes = vec![0u64; n];
    let state = datafusion::common::hash_utils::RandomState::with_seed(0);
    if datafusion::common::hash_utils::create_hashes([&sample], &state, &mut hashes).is_err() {
        return false;
    }
    let distinct: std::collections::HashSet<u64> = hashes.into_iter().collect();
    distinct.len() * 10 > n * 9
}

/// Drains one stream into its file(s) and returns what was written.
pub async fn write_stream(
    mut stream: SendableRecordBatchStream,
    spec: PartSpec,
    progress: Arc<WriteProgress>,
) -> Result<Vec<WrittenFile>> {
    if spec.partition_by.is_empty() {
        // Opened up front so `--files N` always yields N files.
        let mut file = OpenFile::create(&spec, spec.name.clone(), &spec.schema)?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            file.write(&batch)?;
            progress
                .rows
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        }
        return Ok(vec![blocking(move || file.finish()).await?]);
    }

    let part_idx: Vec<usize> = spec
        .partition_by
        .iter()
        .map(|c| spec.schema.index_of(c))
        .collect::<std::result::Result<_, _>>()?;
    let data_idx: Vec<usize> = (0..spec.schema.fields().len())
        .filter(|i| !part_idx.contains(i))
        .collect();
    let data_schema: SchemaRef = Arc::new(spec.schema.project(&data_idx)?);
    let mut open: HashMap<String, OpenFile> = HashMap::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for (folder, rows) in split_by_partition(&batch, &spec.partition_by, &part_idx)? {
            let Some(folder) = folder else {
                reject_too_long(&batch, &rows, &spec)?;
                continue;
            };
            let indices = UInt32Array::from(rows);
            let columns: Vec<ArrayRef> = data_idx
                .iter()
                .map(|&i| take(batch.column(i).as_ref(), &indices, None))
                .collect::<std::result::Result<_, _>>()?;
            let part = RecordBatch::try_new(Arc::clone(&data_schema), columns)?;
            let file = match open.get_mut(&folder) {
                Some(f) => f,
                None => {
                    let rel = format!("{folder}/{}", spec.name);
                    let f = OpenFile::create(&spec, rel, &data_schema)?;
                    open.entry(folder).or_insert(f)
                }
            };
            file.write(&part)?;
            progress
                .rows
                .fetch_add(part.num_rows() as u64, Ordering::Relaxed);
        }
    }
    blocking(move || open.into_values().map(OpenFile::finish).collect()).await
}

/// Rows whose partition folder name would be too long go to the rejects (a job without a
/// rejects output fails with one line instead).
fn reject_too_long(batch: &RecordBatch, rows: &[u32], spec: &PartSpec) -> Result<()> {
    for &row in rows {
        let one = batch.slice(row as usize, 1);
        let (column, len) = spec
            .partition_by
            .iter()
            .filter_map(|c| {
                let i = one.schema().index_of(c).ok()?;
                let text = cast(one.column(i).as_ref(), &DataType::Utf8).ok()?;
                let text = text.as_any().downcast_ref::<StringArray>()?;
                let v = (!text.is_null(0)).then(|| text.value(0));
                Some((c.clone(), hive::segment(c, v).len()))
            })
            .max_by_key(|(_, len)| *len)
            .unwrap_or_default();
        let message = format!(
            "the partition value of '{column}' makes a folder name of {len} bytes, more than {MAX_SEGMENT_BYTES}"
        );
        let Some(rejects) = &spec.rejects else {
            return Err(Error::Config(message));
        };
        let (raw, raw_truncated) = crate::ledger::rejects::row_json(&one);
        rejects.reject_at_write(
            crate::ledger::rejects::RejectRecord {
                column: Some(column),
                kind: "partition_value_too_long",
                message,
                raw,
                raw_truncated,
                ..Default::default()
            },
            spec.task,
        )?;
    }
    Ok(())
}

/// Groups a batch's rows by their partition folder (`a=1/b=x`); rows whose folder name
/// would be longer than [`MAX_SEGMENT_BYTES`] are grouped under `None`.
fn split_by_partition(
    batch: &RecordBatch,
    names: &[String],
    idx: &[usize],
) -> Result<Vec<(Option<String>, Vec<u32>)>> {
    let strings: Vec<ArrayRef> = idx
        .iter()
        .map(|&i| cast(batch.column(i).as_ref(), &DataType::Utf8))
        .collect::<std::result::Result<_, _>>()?;
    let strings: Vec<&StringArray> = strings
        .iter()
        .map(|a| {
            a.as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| Error::Config("partition value did not cast to text".into()))
        })
        .collect::<Result<_>>()?;
    let mut groups: Vec<(Option<String>, Vec<u32>)> = Vec::new();
    let mut index: HashMap<Option<String>, usize> = HashMap::new();
    let mut key = String::new();
    for row in 0..batch.num_rows() {
        key.clear();
        let mut too_long = false;
        for (n, (name, arr)) in names.iter().zip(&strings).enumerate() {
            if n > 0 {
                key.push('/');
            }
            let v = (!arr.is_null(row)).then(|| arr.value(row));
            let segment = hive::segment(name, v);
            too_long |= segment.len() > MAX_SEGMENT_BYTES;
            key.push_str(&segment);
        }
        let group = (!too_long).then(|| key.clone());
        match index.get(&group) {
            Some(&g) => groups[g].1.push(row as u32),
            None => {
                index.insert(group.clone(), groups.len());
                groups.push((group, vec![row as u32]));
            }
        }
    }
    Ok(groups)
}
