//! The `[[enrich]]` stage as written by the user, and the parsing of its values.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use datafusion::arrow::datatypes::DataType;
use serde::de::{MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// One HTTP enrichment stage (`[[enrich]]` in a pipeline file).
///
/// Every row's `{column}` placeholders fill the URL (and body); each distinct request is made
/// once, and the values found at the `extract` JSON pointers become new columns.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichSpec {
    /// The stage's name: later SQL steps can use it as a table, and it names the stage in
    /// the report, the rejects and errors.
    pub name: String,
    /// URL template: `http://host/meta/{record_id}?lang={lang}`. Values are percent-encoded
    /// (a path value as one segment, a query value as one component); `${env:NAME}` inserts
    /// an environment variable (a secret: never printed).
    pub url: String,
    /// `GET` (default) or `POST` (also `PUT`, `PATCH`, `DELETE`).
    #[serde(default)]
    pub method: Option<String>,
    /// Body template for POST: `{column}` inserts the value as JSON (strings quoted and
    /// escaped, numbers and booleans bare, NULL as `null`); `${env:NAME}` works too.
    #[serde(default)]
    pub body: Option<String>,
    /// Request headers; values may use `${env:NAME}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Requests in flight at most: a number (default 16) or `"auto"` (adaptive, up to
    /// `max_concurrency`).
    #[serde(default)]
    pub concurrency: Option<Concurrency>,
    /// Upper bound for `concurrency = "auto"` (default 256).
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// Requests per time unit at most: `"500/s"`, `"1000/m"`, `"10000/h"`.
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// Requests allowed at once above the rate (token bucket size, default 1).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Time allowed for one attempt, e.g. `"10s"` (default 30s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Retries after the first attempt, for connection errors, timeouts, 408, 429 and 5xx
    /// (default 3).
    #[serde(default)]
    pub retries: Option<u32>,
    /// First backoff step (default `"100ms"`); doubles per retry, with full jitter.
    #[serde(default)]
    pub backoff: Option<String>,
    /// Longest backoff (default `"30s"`).
    #[serde(default)]
    pub max_backoff: Option<String>,
    /// Retries may be at most this share of first attempts (plus 10), so a dead API is not
    /// hit `retries` times harder (default 0.2).
    #[serde(default)]
    pub retry_budget: Option<f64>,
    /// Folder or object-store prefix (`s3://bucket/cache/`) of a persistent response cache
    /// (kept across runs).
    #[serde(default)]
    pub cache: Option<String>,
    /// Cached responses older than this are fetched again (`"7d"`); default: never expire.
    #[serde(default)]
    pub cache_ttl: Option<String>,
    /// Options of the object store a `cache` URL names (a pipeline file's `[storage]`; not
    /// part of the stage's own text: [`crate::stage_spec::StageSpec`] carries them beside it).
    #[serde(skip)]
    pub storage: crate::storage::stores::StorageOptions,
    /// A row whose call failed after retries: `reject` (default: to the rejects dataset),
    /// `null` (null columns and a message in `error_column`) or `fail` (stop the job).
    #[serde(default)]
    pub on_error: Option<String>,
    /// Name of the error column of `on_error = "null"` (default `_enrich_error`).
    #[serde(default)]
    pub error_column: Option<String>,
    /// Biggest response body accepted (default `"16MiB"` written as bytes: 16777216).
    #[serde(default)]
    pub max_response_bytes: Option<usize>,
    /// Answers kept in memory so every row asking the same key shares one call (default
    /// 1,000,000). Past it the oldest finished answers are dropped: a key asked again is
    /// answered from `cache` when set, or called again.
    #[serde(default)]
    pub max_keys_in_memory: Option<usize>,
    /// New columns: name = JSON pointer (`"/owner/name"`, a string), or
    /// `{ path = "/score", type = "bigint" }`. Types: string (default), bigint, double,
    /// boolean, json (the JSON text of the value).
    #[serde(
        deserialize_with = "ordered_extract",
        serialize_with = "serialize_extract"
    )]
    pub extract: Vec<(String, ExtractSpec)>,
    /// Send keys in batches to one endpoint instead of one request per key.
    #[serde(default)]
    pub batch: Option<BatchSpec>,
    /// Hosts the stage may send to: `"api.example.com"` (any port) or `"host:port"`. The URL
    /// templates' hosts must be among them, and redirects are followed only to them.
    /// Default: the templates' own `host:port` (redirects elsewhere are not followed).
    #[serde(default)]
    pub allow_hosts: Option<Vec<String>>,
}

impl EnrichSpec {
    /// The columns the URL and body placeholders name: the stage's key (rows with the same
    /// values make the same request).
    pub fn key_columns(&self) -> Result<Vec<String>> {
        use super::template::{Secrets, Target, Template};
        let mut secrets = Secrets::default();
        let url = Template::parse(&self.url, Target::Url, &mut secrets)?;
        let body = self
            .body
            .as_deref()
            .map(|b| Template::parse(b, Target::Body, &mut secrets))
            .transpose()?;
        Ok(Template::key_columns(&url, body.as_ref()))
    }

    /// The limits of a task that runs `partitions` partitions of a stage whose limits
    /// [`EnrichSpec::split_among`] gave per partition: theirs times `partitions`.
    pub fn for_partitions(&self, partitions: usize) -> Result<EnrichSpec> {
        let k = partitions.max(1);
        let mut spec = self.clone();
        match spec.concurrency.unwrap_or(Concurrency::Fixed(16)) {
            Concurrency::Fixed(n) => spec.concurrency = Some(Concurrency::Fixed(n * k)),
            Concurrency::Auto => {
                spec.max_concurrency = Some(spec.max_concurrency.unwrap_or(256) * k)
            }
        }
        if let Some(rate) = spec.rate_limit.as_deref().map(parse_rate).transpose()? {
            spec.rate_limit = Some(format!("{}/s", rate * k as f64));
        }
        Ok(spec)
    }

    /// The limits of one of `tasks` tasks that share the stage's: `concurrency` (or
    /// `max_concurrency` with `"auto"`) and `rate_limit` divided among them (at least one
    /// request in flight each), so that all of them together stay within the stage's.
    pub fn split_among(&self, tasks: usize) -> Result<EnrichSpec> {
        let tasks = tasks.max(1);
        let mut spec = self.clone();
        match spec.concurrency.unwrap_or(Concurrency::Fixed(16)) {
            Concurrency::Fixed(n) => {
                spec.concurrency = Some(Concurrency::Fixed((n / tasks).max(1)))
            }
            Concurrency::Auto => {
                spec.max_concurrency = Some((spec.max_concurrency.unwrap_or(256) / tasks).max(1))
            }
        }
        if let Some(rate) = spec.rate_limit.as_deref().map(parse_rate).transpose()? {
            spec.rate_limit = Some(format!("{}/s", rate / tasks as f64));
        }
        Ok(spec)
    }
}

/// `concurrency = 64` or `concurrency = "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// At most this many requests in flight.
    Fixed(usize),
    /// Adaptive (AIMD with slow start) up to `max_concurrency`.
    Auto,
}

impl Serialize for Concurrency {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Concurrency::Fixed(n) => s.serialize_u64(*n as u64),
            Concurrency::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) if n >= 1 => Ok(Concurrency::Fixed(n as usize)),
            Raw::N(n) => Err(serde::de::Error::custom(format!(
                "concurrency must be at least 1, not {n}"
            ))),
            Raw::S(s) if s.eq_ignore_ascii_case("auto") => Ok(Concurrency::Auto),
            Raw::S(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .map(Concurrency::Fixed)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "concurrency must be a number or \"auto\", not '{s}'"
                    ))
                }),
        }
    }
}

/// Where a new column's value is in the response.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractSpec {
    /// JSON pointer (RFC 6901), e.g. `/owner/name`; `""` is the whole response.
    pub path: String,
    /// The column type.
    pub kind: ExtractType,
}

/// The type of an extracted column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractType {
    /// Text; a non-string JSON value becomes its JSON text.
    String,
    /// 64-bit integer (a JSON integer, or a string holding one).
    Bigint,
    /// 64-bit float (a JSON number, or a string holding one).
    Double,
    /// Boolean.
    Boolean,
    /// The JSON text of the value, whatever it is.
    Json,
}

impl ExtractType {
    /// The Arrow type of the column.
    pub fn data_type(self) -> DataType {
        match self {
            ExtractType::String | ExtractType::Json => DataType::Utf8,
            ExtractType::Bigint => DataType::Int64,
            ExtractType::Double => DataType::Float64,
            ExtractType::Boolean => DataType::Boolean,
        }
    }

    /// The type's name as written in `[extract]`.
    pub fn name(self) -> &'static str {
        match self {
            ExtractType::String => "string",
            ExtractType::Bigint => "bigint",
            ExtractType::Double => "double",
            ExtractType::Boolean => "boolean",
            ExtractType::Json => "json",
        }
    }

    fn parse(s: &str) -> Option<ExtractType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "string" | "text" | "varchar" | "utf8" => ExtractType::String,
            "bigint" | "int" | "integer" | "int64" | "long" => ExtractType::Bigint,
            "double" | "float" | "float64" | "real" => ExtractType::Double,
            "boolean" | "bool" => ExtractType::Boolean,
            "json" => ExtractType::Json,
            _ => return None,
        })
    }
}

impl Serialize for ExtractSpec {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut full = s.serialize_struct("ExtractSpec", 2)?;
        full.serialize_field("path", &self.path)?;
        full.serialize_field("type", self.kind.name())?;
        full.end()
    }
}

impl<'de> Deserialize<'de> for ExtractSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            path: String,
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Path(String),
            Full(Full),
        }
        let (path, kind) = match Raw::deserialize(d)? {
            Raw::Path(p) => (p, None),
            Raw::Full(f) => (f.path, f.kind),
        };
        let kind = match kind {
            None => ExtractType::String,
            Some(k) => ExtractType::parse(&k).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "extract type must be string, bigint, double, boolean or json, not '{k}'"
                ))
            })?,
        };
        if !(path.is_empty() || path.starts_with('/')) {
            return Err(serde::de::Error::custom(format!(
                "extract path '{path}' is not a JSON pointer (it starts with '/')"
            )));
        }
        Ok(ExtractSpec { path, kind })
    }
}

/// Keeps `[enrich.extract]` in the order it is written (columns appear in that order).
/// `[extract]` written back as a table in the order of its columns.
fn serialize_extract<S: Serializer>(
    extract: &[(String, ExtractSpec)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(extract.len()))?;
    for (column, spec) in extract {
        map.serialize_entry(column, spec)?;
    }
    map.end()
}

fn ordered_extract<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<(String, ExtractSpec)>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(String, ExtractSpec)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a table of column = JSON pointer")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, ExtractSpec>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

/// `[enrich.batch]`: many keys per request.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Keys per request (at most).
    pub size: usize,
    /// The batch endpoint (POSTed to); `${env:NAME}` works, `{column}` does not.
    pub url: String,
    /// Body template; `{keys}` is replaced by the JSON array of keys (default
    /// `{"keys": {keys}}`).
    #[serde(default)]
    pub body: Option<String>,
    /// JSON pointer to the array of results in the response (default `""`: the response
    /// is the array).
    #[serde(default)]
    pub results: Option<String>,
    /// JSON pointer, inside each result, to the key it answers (default `/id`).
    #[serde(default)]
    pub key: Option<String>,
}

/// What a failed call does to its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCallError {
    /// The row goes to the rejects dataset.
    Reject,
    /// The row keeps null columns and a message in the error column.
    Null,
    /// The job stops.
    Fail,
}

impl std::str::FromStr for OnCallError {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "reject" => Ok(OnCallError::Reject),
            "null" => Ok(OnCallError::Null),
            "fail" => Ok(OnCallError::Fail),
            other => Err(Error::Config(format!(
                "on_error must be reject, null or fail, not '{other}'"
            ))),
        }
    }
}

/// Parses `"250ms"`, `"10s"`, `"2m"`, `"1h"`, `"7d"` (a bare number is seconds).
pub fn parse_duration(what: &str, s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| Error::Config(format!("{what} '{s}' is not a duration like 10s or 250ms")))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => {
            return Err(Error::Config(format!(
                "{what} '{s}': unknown unit '{other}' (use ms, s, m, h or d)"
            )))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(Error::Config(format!("{what} '{s}' is not a duration")));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `"500/s"`, `"1000/m"`, `"10/h"` into requests per second.
pub fn parse_rate(s: &str) -> Result<f64> {
    let bad = || {
        Error::Config(format!(
            "rate_limit '{s}' is not like 500/s, 1000/m or 10/h"
        ))
    };
    let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
    let n: f64 = n.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return Err(bad()),
    };
    if n <= 0.0 || !n.is_finite() {
        return Err(bad());
    }
    Ok(n / per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_split_among_tasks_stay_within_the_stage_s() {
        let spec: EnrichSpec = toml::from_str(
            "name = \"m\"\nurl = \"http://127.0.0.1:1/{a}/{b}?q={a}\"\nbody = '{\"c\": {c}}'\n\
             concurrency = 30\nrate_limit = \"120/m\"\n[extract]\nt = \"/t\"\n",
        )
        .expect("spec");
        assert_eq!(spec.key_columns().expect("keys"), ["a", "b", "c"]);
        let each = spec.split_among(4).expect("split");
        assert_eq!(each.concurrency, Some(Concurrency::Fixed(7)));
        assert_eq!(each.rate_limit.as_deref(), Some("0.5/s"));
        // Never below one request in flight per task.
        let each = spec.split_among(64).expect("split");
        assert_eq!(each.concurrency, Some(Concurrency::Fixed(1)));
        let mut auto = spec.clone();
        auto.concurrency = Some(Concurrency::Auto);
        auto.max_concurrency = Some(100);
        let each = auto.split_among(3).expect("split");
        assert_eq!(each.max_concurrency, Some(33));
        // A task that runs two of the partitions gets two shares.
        let two = spec
            .split_among(4)
            .and_then(|s| s.for_partitions(2))
            .expect("two");
        assert_eq!(two.concurrency, Some(Concurrency::Fixed(14)));
        assert_eq!(two.rate_limit.as_deref(), Some("1/s"));
    }

    #[test]
    fn durations_and_rates() {
        assert_eq!(
            parse_duration("t", "250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("t", "10s").ok(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_duration("t", "2m").ok(),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_duration("t", "7d").ok(),
            Some(Duration::from_secs(7 * 86400))
        );
        assert!(parse_duration("t", "10 parsecs").is_err());
        assert_eq!(parse_rate("500/s").ok(), Some(500.0));
        assert_eq!(parse_rate("120/m").ok(), Some(2.0));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0/s").is_err());
    }

    #[test]
    fn extract_keeps_order_and_types() {
        let spec: EnrichSpec = toml::from_str(
            r#"
name = "meta"
url = "http://x/{id}"
concurrency = "auto"
[extract]
title = "/title"
owner = "/owner/name"
score = { path = "/score", type = "bigint" }
"#,
        )
        .expect("parse");
        let names: Vec<&str> = spec.extract.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["title", "owner", "score"]);
        assert_eq!(spec.extract[2].1.kind, ExtractType::Bigint);
        assert_eq!(spec.concurrency, Some(Concurrency::Auto));
        let bad = toml::from_str::<EnrichSpec>(
            "name='m'\nurl='u'\n[extract]\nx = { path = '/x', type = 'date' }\n",
        );
        assert!(bad.is_err());
    }
}
