//! The caller of an enrich stage: one request per distinct key (shared by every partition),
//! flow control, retries, the persistent cache and extraction of the new columns.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use futures::future::{BoxFuture, FutureExt, Shared};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};

use super::cache::Cache;
use super::limit::{backoff, retry_after, Limiter, Pacer, RetryBudget, Signal};
use super::spec::{
    parse_duration, parse_rate, Concurrency, EnrichSpec, ExtractSpec, ExtractType, OnCallError,
};
use super::stats::EnrichStats;
use super::template::{Secrets, Target, Template, Value};
use crate::error::{Error, Result};

/// One request, ready to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// The URL with secrets.
    pub url: String,
    /// The URL as it may be shown (secrets redacted).
    pub shown: String,
    /// The body with secrets.
    pub body: Option<String>,
    /// The body as it may be shown.
    pub body_shown: Option<String>,
}

impl Request {
    fn key(&self, method: &str) -> String {
        Cache::key(method, &self.shown, self.body_shown.as_deref())
    }
}

/// How one distinct request ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The extracted values, one per `extract` column.
    Ok(Vec<ScalarValue>),
    /// The call failed after retries.
    Failed(Failure),
}

/// A failed call, safe to show (secrets redacted).
#[derive(Debug, Clone)]
pub struct Failure {
    /// The last HTTP status, if an answer came.
    pub status: Option<u16>,
    /// What went wrong.
    pub message: String,
    /// Attempts made.
    pub attempts: u32,
    /// The URL, secrets redacted.
    pub url: String,
}

type SharedOutcome = Shared<BoxFuture<'static, Arc<Outcome>>>;

/// An enrich stage, resolved and ready to call: shared by all partitions of its plan node.
pub struct Enricher {
    /// The stage's name.
    pub name: String,
    method: reqwest::Method,
    url: Template,
    body: Option<Template>,
    /// Columns the templates read, in order.
    pub columns: Vec<String>,
    url_index: Vec<usize>,
    body_index: Vec<usize>,
    headers: HeaderMap,
    /// New columns.
    pub extract: Vec<(String, ExtractSpec)>,
    /// What failed rows become.
    pub on_error: OnCallError,
    /// The error column of `on_error = "null"`.
    pub error_column: String,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
    max_body: usize,
    /// Secret values, for redaction.
    pub secrets: Secrets,
    client: reqwest::Client,
    /// The concurrency limit.
    pub limiter: Limiter,
    pacer: Pacer,
    budget: RetryBudget,
    cache: Option<Cache>,
    seen: Mutex<HashMap<String, SharedOutcome>>,
    /// Live counters.
    pub stats: Arc<EnrichStats>,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("name", &self.name)
            .field("url", &self.url_shown())
            .finish_non_exhaustive()
    }
}

impl Enricher {
    /// Resolves a stage: templates, secrets, limits, client and cache. `base` anchors a
    /// relative cache folder.
    pub fn new(spec: &EnrichSpec, base: &Path) -> Result<Enricher> {
        let stage = |e: Error| match e {
            Error::Config(m) => Error::Config(format!("enrich '{}': {m}", spec.name)),
            other => other,
        };
        Enricher::build(spec, base).map_err(stage)
    }

    fn build(spec: &EnrichSpec, base: &Path) -> Result<Enricher> {
        if spec.batch.is_some() {
            return Err(Error::Config(
                "batch endpoints are not supported yet: remove [enrich.batch]".into(),
            ));
        }
        let mut secrets = Secrets::default();
        let url = Template::parse(&spec.url, Target::Url, &mut secrets)?;
        let body = spec
            .body
            .as_deref()
            .map(|b| Template::parse(b, Target::Body, &mut secrets))
            .transpose()?;
        let method_name = spec.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        let method = match method_name.as_str() {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" => {
                reqwest::Method::from_bytes(method_name.as_bytes())
                    .map_err(|e| Error::Config(e.to_string()))?
            }
            other => {
                return Err(Error::Config(format!(
                    "method must be GET, POST, PUT, PATCH or DELETE, not '{other}'"
                )))
            }
        };
        if url.columns.is_empty() && body.as_ref().is_none_or(|b| b.columns.is_empty()) {
            return Err(Error::Config(
                "the url (or body) needs a {column} placeholder: every row would make the same call"
                    .into(),
            ));
        }
        let mut columns: Vec<String> = url.columns.clone();
        for c in body.iter().flat_map(|b| b.columns.iter()) {
            if !columns.contains(c) {
                columns.push(c.clone());
            }
        }
        let index = |t: &Template| -> Vec<usize> {
            t.columns
                .iter()
                .filter_map(|c| columns.iter().position(|x| x == c))
                .collect()
        };
        let url_index = index(&url);
        let body_index = body.as_ref().map(index).unwrap_or_default();
        let mut headers = HeaderMap::new();
        for (k, v) in &spec.headers {
            let t = Template::parse(v, Target::Header, &mut secrets)?;
            let (value, _) = t
                .render(&[], &secrets)
                .map_err(|e| Error::Config(format!("header {k}: {e}")))?;
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| Error::Config(format!("'{k}' is not a header name")))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| Error::Config(format!("header {k}: the value is not valid")))?;
            if t.has_secret() {
                value.set_sensitive(true);
            }
            headers.insert(name, value);
        }
        if body.is_some() && !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if spec.extract.is_empty() {
            return Err(Error::Config("[enrich.extract] names no column".into()));
        }
        let on_error = spec
            .on_error
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or(OnCallError::Reject);
        let (limiter, pool) = match spec.concurrency.unwrap_or(Concurrency::Fixed(16)) {
            Concurrency::Fixed(n) => (Limiter::fixed(n), n),
            Concurrency::Auto => {
                let max = spec.max_concurrency.unwrap_or(256).max(1);
                (Limiter::adaptive(max), max)
            }
        };
        let rate = spec.rate_limit.as_deref().map(parse_rate).transpose()?;
        let timeout = spec
            .timeout
            .as_deref()
            .map(|t| parse_duration("timeout", t))
            .transpose()?
            .unwrap_or(Duration::from_secs(30));
        let retry_budget = spec.retry_budget.unwrap_or(0.2);
        if !(0.0..=100.0).contains(&retry_budget) {
            return Err(Error::Config(format!(
                "retry_budget must be between 0 and 100, not {retry_budget}"
            )));
        }
        let cache = match &spec.cache {
            Some(dir) => {
                let dir = if Path::new(dir).is_absolute() {
                    Path::new(dir).to_path_buf()
                } else {
                    base.join(dir)
                };
                let ttl = spec
                    .cache_ttl
                    .as_deref()
                    .map(|t| parse_duration("cache_ttl", t))
                    .transpose()?;
                Some(Cache::open(&dir, ttl)?)
            }
            None if spec.cache_ttl.is_some() => {
                return Err(Error::Config("cache_ttl needs a cache folder".into()))
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .tcp_nodelay(true)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Enricher {
            name: spec.name.clone(),
            method,
            url,
            body,
            columns,
            url_index,
            body_index,
            headers,
            extract: spec.extract.clone(),
            on_error,
            error_column: spec
                .error_column
                .clone()
                .unwrap_or_else(|| "_enrich_error".to_string()),
            timeout,
            retries: spec.retries.unwrap_or(3),
            backoff: spec
                .backoff
                .as_deref()
                .map(|b| parse_duration("backoff", b))
                .transpose()?
                .unwrap_or(Duration::from_millis(100)),
            max_backoff: spec
                .max_backoff
                .as_deref()
                .map(|b| parse_duration("max_backoff", b))
                .transpose()?
                .unwrap_or(Duration::from_secs(30)),
            max_body: spec.max_response_bytes.unwrap_or(16 << 20),
            secrets,
            client,
            limiter,
            pacer: Pacer::new(rate, spec.burst.unwrap_or(1)),
            budget: RetryBudget::new(retry_budget),
            cache,
            seen: Mutex::new(HashMap::new()),
            stats: Arc::new(EnrichStats::new(&spec.name)),
        })
    }

    /// The URL template with its placeholders, for plans and messages.
    pub fn url_shown(&self) -> String {
        let values: Vec<Value> = self
            .url
            .columns
            .iter()
            .map(|c| Some((format!("{{{c}}}"), false)))
            .collect();
        match self.url.render(&values, &self.secrets) {
            Ok((_, shown)) => shown.replace("%7B", "{").replace("%7D", "}"),
            Err(_) => "?".into(),
        }
    }

    /// The method.
    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    /// The request for one row's values (one per entry of [`Enricher::columns`]), or why
    /// there can be none. `Ok(None)`: a NULL in the URL, so no call.
    pub fn request(&self, values: &[Value]) -> std::result::Result<Option<Request>, String> {
        let url_values: Vec<Value> = self.url_index.iter().map(|&i| values[i].clone()).collect();
        if url_values.iter().any(Option::is_none) {
            return Ok(None);
        }
        let (url, shown) = self.url.render(&url_values, &self.secrets)?;
        let (body, body_shown) = match &self.body {
            Some(t) => {
                let v: Vec<Value> = self.body_index.iter().map(|&i| values[i].clone()).collect();
                let (b, s) = t.render(&v, &self.secrets)?;
                (Some(b), Some(s))
            }
            None => (None, None),
        };
        Ok(Some(Request {
            url,
            shown,
            body,
            body_shown,
        }))
    }

    /// The outcome of `request`: started on first sight, shared after that.
    pub fn outcome(self: &Arc<Self>, request: Request) -> SharedOutcome {
        let key = request.key(self.method.as_str());
        let Ok(mut seen) = self.seen.lock() else {
            let failure = self.failure(None, "internal lock poisoned".into(), 0, &request);
            return futures::future::ready(Arc::new(Outcome::Failed(failure)))
                .boxed()
                .shared();
        };
        if let Some(s) = seen.get(&key) {
            return s.clone();
        }
        self.stats.distinct_keys.fetch_add(1, Ordering::Relaxed);
        let this = Arc::clone(self);
        let shown = request.shown.clone();
        let task = tokio::spawn(async move { this.fetch(request).await });
        let fut = async move {
            Arc::new(task.await.unwrap_or_else(|e| {
                Outcome::Failed(Failure {
                    status: None,
                    message: format!("the call task failed: {e}"),
                    attempts: 0,
                    url: shown,
                })
            }))
        }
        .boxed()
        .shared();
        seen.insert(key, fut.clone());
        fut
    }

    fn failure(
        &self,
        status: Option<u16>,
        message: String,
        attempts: u32,
        req: &Request,
    ) -> Failure {
        Failure {
            status,
            message: self.secrets.redact(&message),
            attempts,
            url: req.shown.clone(),
        }
    }

    /// Cache, then the API with retries; then extraction.
    async fn fetch(&self, req: Request) -> Outcome {
        let cache_key = req.key(self.method.as_str());
        if let Some(body) = self.cache.as_ref().and_then(|c| c.get(&cache_key)) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return self.parse(&body, &req, 0);
        }
        self.budget.first_attempt();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (result, latency) = {
                let _permit = self.limiter.acquire().await;
                self.pacer.acquire().await;
                let started = self.stats.call_started();
                let result = self.send(&req).await;
                let latency = started.elapsed();
                self.stats.call_ended(latency);
                (result, latency)
            };
            let (cause, status, wait_at_least, message) = match result {
                Ok((status, _, body)) if (200..300).contains(&status) => {
                    self.limiter.record(Signal::Ok, latency);
                    if let Some(cache) = &self.cache {
                        if let Err(e) = cache.put(&cache_key, &body) {
                            tracing::warn!("enrich '{}': cache: {e}", self.name);
                        }
                    }
                    return self.parse(&body, &req, attempt);
                }
                Ok((status, retry_after_header, body)) => {
                    let congested = status == 429 || status == 503;
                    self.limiter.record(
                        if congested {
                            Signal::Congested
                        } else {
                            Signal::Ok
                        },
                        latency,
                    );
                    let wait = retry_after_header.filter(|_| congested);
                    let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)])
                        .trim()
                        .to_string();
                    let message = if excerpt.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        format!("HTTP {status}: {excerpt}")
                    };
                    (status.to_string(), Some(status), wait, message)
                }
                Err((cause, message)) => {
                    if cause == "timeout" || cause == "connect" {
                        self.limiter.record(Signal::Congested, latency);
                    }
                    (cause.to_string(), None, None, message)
                }
            };
            self.stats.failure(&cause);
            let retryable = match status {
                Some(s) => matches!(s, 408 | 429 | 500 | 502 | 503 | 504),
                None => cause != "body_too_large",
            };
            let mut message = message;
            if retryable && attempt <= self.retries {
                if self.budget.try_retry() {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let mut wait = backoff(attempt - 1, self.backoff, self.max_backoff);
                    if let Some(ra) = wait_at_least {
                        self.pacer.pause_until(Instant::now() + ra);
                        wait = wait.max(ra);
                    }
                    tokio::time::sleep(wait).await;
                    continue;
                }
                self.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                message.push_str(" (no retry: the retry budget is spent)");
            }
            self.stats.failed_keys.fetch_add(1, Ordering::Relaxed);
            let message = format!(
                "{} {}: {message} after {attempt} attempt{}",
                self.method,
                req.shown,
                if attempt == 1 { "" } else { "s" }
            );
            return Outcome::Failed(self.failure(status, message, attempt, &req));
        }
    }

    /// One attempt: status, `Retry-After`, body (capped).
    async fn send(
        &self,
        req: &Request,
    ) -> std::result::Result<(u16, Option<Duration>, Vec<u8>), (&'static str, String)> {
        let mut rb = self
            .client
            .request(self.method.clone(), &req.url)
            .headers(self.headers.clone())
            .timeout(self.timeout);
        if let Some(b) = &req.body {
            rb = rb.body(b.clone());
        }
        let mut resp = rb.send().await.map_err(|e| classify(&e))?;
        let status = resp.status().as_u16();
        let wait = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e))? {
            if body.len() + chunk.len() > self.max_body {
                return Err((
                    "body_too_large",
                    format!("the response is bigger than {} bytes", self.max_body),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, wait, body))
    }

    /// Extracts the new columns from a response body.
    fn parse(&self, body: &[u8], req: &Request, attempts: u32) -> Outcome {
        let json: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                self.stats.failed_keys.fetch_add(1, Ordering::Relaxed);
                let message = format!(
                    "{} {}: the response is not JSON ({e})",
                    self.method, req.shown
                );
                return Outcome::Failed(self.failure(Some(200), message, attempts, req));
            }
        };
        let mut values = Vec::with_capacity(self.extract.len());
        for (name, spec) in &self.extract {
            match extract_value(&json, spec) {
                Ok(v) => values.push(v),
                Err(why) => {
                    self.stats.failed_keys.fetch_add(1, Ordering::Relaxed);
                    let message = format!("{} {}: extract '{name}': {why}", self.method, req.shown);
                    return Outcome::Failed(self.failure(Some(200), message, attempts, req));
                }
            }
        }
        Outcome::Ok(values)
    }
}

/// Names the cause of a transport error and describes it without the URL (which may hold a
/// secret; the caller adds the redacted one).
fn classify(e: &reqwest::Error) -> (&'static str, String) {
    let cause = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    let mut message = match cause {
        "timeout" => "timed out".to_string(),
        "connect" => "cannot connect".to_string(),
        _ => "the request failed".to_string(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    (cause, message)
}

/// The value at `spec.path` as the column's type: missing or `null` is NULL; a value of the
/// wrong kind is an error.
pub fn extract_value(
    json: &serde_json::Value,
    spec: &ExtractSpec,
) -> std::result::Result<ScalarValue, String> {
    use serde_json::Value as J;
    let found = json.pointer(&spec.path).filter(|v| !v.is_null());
    let wrong = |v: &J| {
        let text = v.to_string();
        let text = if text.len() > 60 {
            format!("{}...", &text[..text.floor_char_boundary(60)])
        } else {
            text
        };
        format!(
            "expected {} at {}, found {text}",
            type_word(spec.kind),
            spec.path
        )
    };
    Ok(match (spec.kind, found) {
        (kind, None) => ScalarValue::try_from(&kind.data_type()).map_err(|e| e.to_string())?,
        (ExtractType::String, Some(J::String(s))) => ScalarValue::Utf8(Some(s.clone())),
        (ExtractType::String | ExtractType::Json, Some(v)) => {
            ScalarValue::Utf8(Some(v.to_string()))
        }
        (ExtractType::Bigint, Some(v)) => {
            let n = match v {
                J::Number(n) => n.as_i64(),
                J::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            ScalarValue::Int64(Some(n.ok_or_else(|| wrong(v))?))
        }
        (ExtractType::Double, Some(v)) => {
            let n = match v {
                J::Number(n) => n.as_f64(),
                J::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            ScalarValue::Float64(Some(n.ok_or_else(|| wrong(v))?))
        }
        (ExtractType::Boolean, Some(J::Bool(b))) => ScalarValue::Boolean(Some(*b)),
        (ExtractType::Boolean, Some(v)) => return Err(wrong(v)),
    })
}

fn type_word(kind: ExtractType) -> &'static str {
    match kind {
        ExtractType::String => "a string",
        ExtractType::Json => "JSON",
        ExtractType::Bigint => "an integer",
        ExtractType::Double => "a number",
        ExtractType::Boolean => "a boolean",
    }
}

/// True for column types inserted bare (unquoted) into a JSON body.
pub fn is_bare_json(dt: &DataType) -> bool {
    dt.is_numeric() || *dt == DataType::Boolean
}
