//! Plans as bytes, for another process: sluice's plan nodes in DataFusion's protobuf form.
//!
//! DataFusion's `datafusion-proto` encodes its own nodes and hands every other node to a
//! [`PhysicalExtensionCodec`]; [`SluiceCodec`] writes sluice's nodes as their configuration
//! (JSON: a stage's [`StageSpec`], a write's [`WriteSpec`], schemas as Arrow IPC) and reads
//! them back into nodes that find what runs among the decoding session's
//! [`crate::services::Services`]. This is how a plan reaches an executor that never saw the
//! job (Ballista ships plans this way).
//!
//! Encoded: the CSV/NDJSON scan ([`CsvScanExec`]: its ranges, dialect, schema and the id of
//! its books), the Parquet file-by-file scan ([`FileByFileExec`]: each part's DataFusion scan
//! in protobuf form), stage nodes ([`MapExec`]), the write ([`WriteExec`]),
//! [`OrderedConcatExec`], and a scan cut for a cluster (a `DataSourceExec` over
//! [`partitions::PartitionSource`]: each file group's scan as plan bytes; decoded, it is
//! bound to the decoding task's context). ORC parts travel as what their scan is made from
//! ([`crate::source::file_scan::OrcPart`]: `datafusion-orc`'s scan has no protobuf form).

use std::sync::Arc;

use base64::Engine;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::parsers::CompressionTypeVariant;
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::TaskContext;
use datafusion::object_store::path::Path;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::cluster::partitions;
use crate::ledger::rejects::BooksRef;
use crate::sink::exec::{WriteExec, WriteSpec};
use crate::sink::ordered::OrderedConcatExec;
use crate::source::csv_scan::{CsvRange, CsvScanConfig, CsvScanExec, RowFormat};
use crate::source::file_scan::{FileByFileExec, FilePart};
use crate::stage::MapExec;
use crate::stage_spec::StageSpec;
use crate::storage::format::CsvRules;

/// sluice's nodes as they travel: their configuration.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "node", rename_all = "snake_case", deny_unknown_fields)]
enum Wire {
    /// A stage node.
    Map {
        stage: u64,
        spec: StageSpec,
        describe: String,
        #[serde(with = "schema_text")]
        schema: SchemaRef,
    },
    /// The write.
    Write { spec: WriteSpec },
    /// Partitions in order.
    OrderedConcat,
    /// The CSV/NDJSON scan.
    CsvScan(Box<WireCsvScan>),
    /// The Parquet/ORC scan, file by file.
    FileByFile(Box<WireFileScan>),
    /// A sluice scan as a `DataSourceExec` whose files are its partitions (see
    /// [`crate::cluster::partitions`]): each file group's one-partition scans as plan
    /// bytes (base64).
    Partitions {
        #[serde(with = "schema_text")]
        schema: SchemaRef,
        scan: String,
        store_url: String,
        groups: Vec<Vec<String>>,
        limit: Option<usize>,
    },
}

/// A [`FileByFileExec`] as configuration: each part's own scan as plan bytes (base64).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFileScan {
    store_url: String,
    #[serde(with = "schema_text")]
    schema: SchemaRef,
    partitions: Vec<Vec<WirePart>>,
    required: Vec<(usize, String)>,
    books: BooksRef,
    limited: bool,
    origin: bool,
    partition_offset: usize,
    scan: u64,
}

/// One part of a columnar file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePart {
    display: String,
    plan: String,
    whole: bool,
    start: u64,
    location: String,
    size: u64,
    /// For ORC (whose scan `plan` cannot hold): what the part's scan is made from.
    orc: Option<WireOrcPart>,
}

/// An ORC part's scan as configuration.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireOrcPart {
    #[serde(with = "schema_text")]
    file_schema: SchemaRef,
    /// The partition columns, as a schema.
    #[serde(with = "schema_text")]
    partition_schema: SchemaRef,
    projection: Option<Vec<usize>>,
    limit: Option<usize>,
    range: Option<(i64, i64)>,
    /// DataFusion's protobuf form (base64).
    partition_values: Vec<String>,
}

fn encode_file_scan(scan: &FileByFileExec) -> Result<WireFileScan> {
    let part = |p: &FilePart| -> Result<WirePart> {
        let (plan, orc) = match &p.orc {
            Some(o) => (
                String::new(),
                Some(WireOrcPart {
                    file_schema: Arc::clone(&o.file_schema),
                    partition_schema: Arc::new(datafusion::arrow::datatypes::Schema::new(
                        o.partition_fields.clone(),
                    )),
                    projection: o.projection.clone(),
                    limit: o.limit,
                    range: o.range,
                    partition_values: o
                        .partition_values
                        .iter()
                        .map(scalar_to_text)
                        .collect::<Result<_>>()?,
                }),
            ),
            None => (
                base64::engine::general_purpose::STANDARD
                    .encode(plan_to_bytes(Arc::clone(&p.plan))?),
                None,
            ),
        };
        Ok(WirePart {
            display: p.display.clone(),
            plan,
            whole: p.whole,
            start: p.start,
            location: p.location.to_string(),
            size: p.size,
            orc,
        })
    };
    Ok(WireFileScan {
        store_url: scan.store_url.as_str().to_string(),
        schema: Arc::clone(&scan.schema),
        partitions: nested(&scan.partitions, part)?,
        required: scan.required.clone(),
        books: scan.books,
        limited: scan.limited,
        origin: scan.origin,
        partition_offset: scan.partition_offset,
        scan: scan.scan_id,
    })
}

fn decode_file_scan(w: WireFileScan, ctx: &TaskContext) -> Result<FileByFileExec> {
    let bad = |what: &str, e: String| DataFusionError::Plan(format!("encoded scan: {what}: {e}"));
    let store_url = ObjectStoreUrl::parse(&w.store_url)?;
    let part = |p: WirePart| -> Result<FilePart> {
        let location = Path::parse(&p.location).map_err(|e| bad("location", e.to_string()))?;
        let (plan, orc) = match p.orc {
            Some(o) => {
                let orc = crate::source::file_scan::OrcPart {
                    file_schema: o.file_schema,
                    partition_fields: o.partition_schema.fields().iter().cloned().collect(),
                    projection: o.projection,
                    limit: o.limit,
                    range: o.range,
                    partition_values: o
                        .partition_values
                        .iter()
                        .map(|t| scalar_from_text(t))
                        .collect::<Result<_>>()?,
                };
                (orc.plan(&store_url, &location, p.size)?, Some(orc))
            }
            None => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&p.plan)
                    .map_err(|e| bad("part", e.to_string()))?;
                (plan_from_bytes(&bytes, ctx)?, None)
            }
        };
        Ok(FilePart {
            display: p.display,
            plan,
            whole: p.whole,
            start: p.start,
            location,
            size: p.size,
            orc,
        })
    };
    let partitions = nested(w.partitions, part)?;
    let scan = FileByFileExec::new(
        ObjectStoreUrl::parse(&w.store_url)?,
        w.schema,
        partitions,
        w.required,
        w.books,
        w.limited,
    )
    .with_scan_id(w.scan);
    let mut scan = if w.origin { scan.with_origin() } else { scan };
    scan.partition_offset = w.partition_offset;
    Ok(scan)
}

/// A [`CsvScanExec`] as configuration.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCsvScan {
    format: RowFormat,
    #[serde(with = "schema_text")]
    file_schema: SchemaRef,
    /// The per-file columns, as a schema.
    #[serde(with = "schema_text")]
    partition_schema: SchemaRef,
    header: bool,
    rules: CsvRules,
    trailing: bool,
    null_regex: Option<String>,
    compression: String,
    batch_size: usize,
    read: (u64, usize),
    max_record_bytes: u64,
    max_compression_ratio: u64,
    origin: bool,
    store_url: String,
    partitions: Vec<Vec<WireRange>>,
    projection: Option<Vec<usize>>,
    books: BooksRef,
    scan: u64,
    partition_offset: usize,
}

/// One byte range of a file; partition values in DataFusion's protobuf form (base64).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRange {
    location: String,
    display: String,
    start: u64,
    end: u64,
    size: u64,
    preamble: u64,
    partition_values: Vec<String>,
}

/// A partition value in DataFusion's protobuf form, as base64 text.
fn scalar_to_text(v: &ScalarValue) -> Result<String> {
    let proto = datafusion_proto::protobuf::ScalarValue::try_from(v)
        .map_err(|e| DataFusionError::Plan(format!("partition value: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(proto.encode_to_vec()))
}

/// A partition value from [`scalar_to_text`]'s text.
fn scalar_from_text(text: &str) -> Result<ScalarValue> {
    let bad = |e: String| DataFusionError::Plan(format!("encoded scan: partition value: {e}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| bad(e.to_string()))?;
    let proto = datafusion_proto::protobuf::ScalarValue::decode(bytes.as_slice())
        .map_err(|e| bad(e.to_string()))?;
    ScalarValue::try_from(&proto).map_err(|e| bad(e.to_string()))
}

/// `f` over every item of a list of lists (a scan's partitions of ranges or parts).
fn nested<I, J, T, U>(outer: I, mut f: impl FnMut(T) -> Result<U>) -> Result<Vec<Vec<U>>>
where
    I: IntoIterator<Item = J>,
    J: IntoIterator<Item = T>,
{
    outer
        .into_iter()
        .map(|inner| inner.into_iter().map(&mut f).collect())
        .collect()
}

fn encode_scan(scan: &CsvScanExec) -> Result<WireCsvScan> {
    let c = &scan.config;
    Ok(WireCsvScan {
        format: c.format,
        file_schema: Arc::clone(&c.file_schema),
        partition_schema: Arc::new(Schema::new(c.partition_fields.clone())),
        header: c.header,
        rules: c.rules,
        trailing: c.trailing,
        null_regex: c.null_regex.as_ref().map(|r| r.as_str().to_string()),
        compression: c.compression.get_variant().to_string(),
        batch_size: c.batch_size,
        read: c.read,
        max_record_bytes: c.max_record_bytes,
        max_compression_ratio: c.max_compression_ratio,
        origin: c.origin,
        store_url: scan.store_url.as_str().to_string(),
        partitions: nested(&scan.partitions, |r: &CsvRange| {
            Ok(WireRange {
                location: r.location.to_string(),
                display: r.display.clone(),
                start: r.start,
                end: r.end,
                size: r.size,
                preamble: r.preamble,
                partition_values: r
                    .partition_values
                    .iter()
                    .map(scalar_to_text)
                    .collect::<Result<_>>()?,
            })
        })?,
        projection: scan.projection.clone(),
        books: scan.books,
        scan: scan.scan_id,
        partition_offset: scan.partition_offset,
    })
}

fn decode_scan(w: WireCsvScan) -> Result<CsvScanExec> {
    let bad = |what: &str, e: String| DataFusionError::Plan(format!("encoded scan: {what}: {e}"));
    let config = CsvScanConfig {
        format: w.format,
        file_schema: w.file_schema,
        partition_fields: w.partition_schema.fields().iter().cloned().collect(),
        header: w.header,
        rules: w.rules,
        trailing: w.trailing,
        null_regex: w
            .null_regex
            .map(|r| regex::Regex::new(&r))
            .transpose()
            .map_err(|e| bad("null regex", e.to_string()))?,
        compression: FileCompressionType::from(
            w.compression
                .parse::<CompressionTypeVariant>()
                .map_err(|e| bad("compression", e.to_string()))?,
        ),
        batch_size: w.batch_size,
        file_projection: None,
        read: w.read,
        max_record_bytes: w.max_record_bytes,
        max_compression_ratio: w.max_compression_ratio,
        origin: w.origin,
    };
    let partitions = nested(w.partitions, |r: WireRange| {
        Ok(CsvRange {
            location: Path::parse(&r.location).map_err(|e| bad("location", e.to_string()))?,
            display: r.display,
            start: r.start,
            end: r.end,
            size: r.size,
            preamble: r.preamble,
            partition_values: r
                .partition_values
                .iter()
                .map(|t| scalar_from_text(t))
                .collect::<Result<_>>()?,
        })
    })?;
    let store_url = ObjectStoreUrl::parse(&w.store_url)?;
    Ok(
        CsvScanExec::try_new(config, store_url, partitions, w.projection, w.books)?
            .with_scan_id(w.scan)
            .with_partition_offset(w.partition_offset),
    )
}

/// Encodes and decodes sluice's plan nodes for `datafusion-proto`; any other extension node
/// goes to the codec it wraps (Ballista's, on a cluster: its shuffle nodes).
#[derive(Debug, Default, Clone)]
pub struct SluiceCodec {
    inner: Option<Arc<dyn PhysicalExtensionCodec>>,
}

impl SluiceCodec {
    /// sluice's nodes here, every other extension node by `inner`.
    pub fn wrapping(inner: Arc<dyn PhysicalExtensionCodec>) -> Self {
        SluiceCodec { inner: Some(inner) }
    }
}

fn only_input(node: &str, inputs: &[Arc<dyn ExecutionPlan>]) -> Result<Arc<dyn ExecutionPlan>> {
    match inputs {
        [one] => Ok(Arc::clone(one)),
        _ => Err(DataFusionError::Internal(format!(
            "a {node} node has one input, the encoded plan gave {}",
            inputs.len()
        ))),
    }
}

impl PhysicalExtensionCodec for SluiceCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // sluice's nodes are JSON; what is not is the wrapped codec's.
        let wire: Wire = match (serde_json::from_slice(buf), &self.inner) {
            (Ok(wire), _) => wire,
            (Err(_), Some(inner)) => return inner.try_decode(buf, inputs, ctx, _proto_converter),
            (Err(e), None) => {
                return Err(DataFusionError::Plan(format!(
                    "not a sluice plan node: {e}"
                )))
            }
        };
        Ok(match wire {
            Wire::Map {
                stage,
                spec,
                describe,
                schema,
            } => Arc::new(MapExec::new(
                only_input("stage", inputs)?,
                stage,
                spec,
                describe,
                schema,
            )),
            Wire::Write { spec } => Arc::new(WriteExec::new(only_input("write", inputs)?, spec)),
            Wire::OrderedConcat => Arc::new(OrderedConcatExec::new(only_input(
                "ordered concat",
                inputs,
            )?)),
            Wire::CsvScan(scan) => Arc::new(decode_scan(*scan)?),
            Wire::FileByFile(scan) => Arc::new(decode_file_scan(*scan, ctx)?),
            Wire::Partitions {
                schema,
                scan,
                store_url,
                groups,
                limit,
            } => {
                let groups = nested(groups, |text: String| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|e| DataFusionError::Plan(format!("encoded scan part: {e}")))?;
                    plan_from_bytes(&bytes, ctx)
                })?;
                let scan = partitions::Partitioned {
                    schema,
                    scan,
                    store_url: ObjectStoreUrl::parse(&store_url)?,
                    groups,
                    limit,
                };
                partitions::partitioned(scan, Some(partitions::shared_context(ctx)))
            }
        })
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let wire = if let Some(m) = node.downcast_ref::<MapExec>() {
            Wire::Map {
                stage: m.stage(),
                spec: m.spec().for_wire(),
                describe: m.describe().to_string(),
                schema: m.schema(),
            }
        } else if let Some(w) = node.downcast_ref::<WriteExec>() {
            Wire::Write {
                spec: w.spec().clone(),
            }
        } else if node.downcast_ref::<OrderedConcatExec>().is_some() {
            Wire::OrderedConcat
        } else if let Some(scan) = node.downcast_ref::<CsvScanExec>() {
            Wire::CsvScan(Box::new(encode_scan(scan)?))
        } else if let Some(scan) = node.downcast_ref::<FileByFileExec>() {
            Wire::FileByFile(Box::new(encode_file_scan(scan)?))
        } else if let Some(found) = partitions::parts_of(node.as_ref()) {
            let scan = found?;
            Wire::Partitions {
                schema: scan.schema,
                scan: scan.scan,
                store_url: scan.store_url.as_str().to_string(),
                groups: nested(scan.groups, |part: Arc<dyn ExecutionPlan>| {
                    Ok(base64::engine::general_purpose::STANDARD.encode(plan_to_bytes(part)?))
                })?,
                limit: scan.limit,
            }
        } else if let Some(inner) = &self.inner {
            return inner.try_encode(node, buf, _proto_converter);
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "sluice cannot send a {} node to another process yet",
                node.name()
            )));
        };
        serde_json::to_writer(buf, &wire).map_err(|e| DataFusionError::External(Box::new(e)))
    }
}

/// `plan` as bytes (DataFusion's protobuf form, sluice's nodes by [`SluiceCodec`]).
pub fn plan_to_bytes(plan: Arc<dyn ExecutionPlan>) -> Result<bytes::Bytes> {
    datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(
        plan,
        &SluiceCodec::default(),
    )
}

/// A plan from [`plan_to_bytes`]'s bytes, for the session of `ctx`.
pub fn plan_from_bytes(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
        bytes,
        ctx,
        &SluiceCodec::default(),
    )
}

/// A schema as text: its Arrow IPC form (fields, types, nullability, metadata), base64.
pub mod schema_text {
    use std::io::Cursor;

    use base64::Engine;
    use datafusion::arrow::datatypes::SchemaRef;
    use datafusion::arrow::ipc::reader::StreamReader;
    use datafusion::arrow::ipc::writer::StreamWriter;
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `schema`.
    pub fn serialize<S: Serializer>(schema: &SchemaRef, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut bytes, schema).map_err(S::Error::custom)?;
            w.finish().map_err(S::Error::custom)?;
        }
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Reads a schema [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SchemaRef, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(D::Error::custom)?;
        let reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(D::Error::custom)?;
        Ok(reader.schema())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::empty::EmptyExec;
    use std::path::PathBuf;

    #[test]
    fn a_write_node_reads_back_as_written() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ïd #1", DataType::Int64, false),
            Field::new(
                "when",
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
                true,
            ),
        ]));
        let spec = WriteSpec {
            dir: PathBuf::from("/tmp/out ~%#/.sluice-staging"),
            job: "job-1".into(),
            single: false,
            schema: Arc::clone(&schema) as SchemaRef,
            format: crate::storage::format::Format::Parquet,
            compression: crate::sink::ParquetCompression::Snappy,
            partition_by: vec!["when".into()],
            books: Some(crate::ledger::rejects::BooksRef {
                id: 42,
                mode: crate::ledger::rejects::OnError::Skip,
            }),
            progress: 7,
            upload: Some("s3://b/out ~%#/é".into()),
        };
        let node: Arc<dyn ExecutionPlan> =
            Arc::new(OrderedConcatExec::new(Arc::new(WriteExec::new(
                Arc::new(EmptyExec::new(Arc::clone(&schema) as SchemaRef)),
                spec.clone(),
            ))));
        let bytes = plan_to_bytes(node).expect("encode");
        let ctx = crate::context::session(2).task_ctx();
        let back = plan_from_bytes(&bytes, &ctx).expect("decode");
        assert_eq!(back.name(), "OrderedConcatExec");
        let write = back.children()[0]
            .downcast_ref::<WriteExec>()
            .expect("a write node");
        assert_eq!(format!("{:?}", write.spec()), format!("{spec:?}"));
        assert_eq!(write.spec().schema.as_ref(), schema.as_ref());
    }

    /// The storage options of a lookup's files and of an enrich stage's cache travel to
    /// executors without their secrets: the plan's bytes hold the endpoint and region, not
    /// the keys (executors use their own credentials, as for the job's inputs).
    #[test]
    fn stage_nodes_carry_no_secret() {
        let secret = "SECRET-IN-NO-PLAN-41c2";
        let storage: crate::storage::stores::StorageOptions = [
            ("endpoint", "http://127.0.0.1:9"),
            ("region", "eu-west-1"),
            ("aws_access_key_id", "AKIA-not-secret-but-not-sent"),
            ("aws_secret_access_key", secret),
            ("session_token", secret),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let books = crate::ledger::rejects::BooksRef {
            id: 1,
            mode: crate::ledger::rejects::OnError::Reject,
        };
        let lookup: crate::lookup::LookupSpec =
            toml::from_str("name = \"c\"\npaths = \"s3://b/c.csv\"\non = \"k\"\n").expect("spec");
        let enrich: crate::enrich::EnrichSpec = toml::from_str(
            "name = \"m\"\nurl = \"http://127.0.0.1:9/{k}\"\ncache = \"s3://b/cache\"\n\
             [extract]\nt = \"/t\"\n",
        )
        .expect("spec");
        let stages = [
            StageSpec::Lookup {
                spec: Box::new(lookup),
                storage: storage.clone(),
                books,
            },
            StageSpec::Enrich {
                spec: Box::new(enrich),
                storage,
                books,
                by_key: false,
            },
        ];
        for stage in stages {
            let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
            let node: Arc<dyn ExecutionPlan> = Arc::new(MapExec::new(
                Arc::new(EmptyExec::new(Arc::clone(&schema) as SchemaRef)),
                3,
                stage,
                "a stage".into(),
                schema,
            ));
            let bytes = plan_to_bytes(node).expect("encode");
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(secret), "{text}");
            assert!(!text.contains("AKIA-not-secret"), "{text}");
            assert!(
                text.contains("127.0.0.1:9") && text.contains("eu-west-1"),
                "{text}"
            );
        }
    }
}
