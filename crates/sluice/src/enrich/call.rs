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
use super::stats::Wait;
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
    /// The key value itself (batch mode): text, and whether JSON takes it bare.
    pub key_value: Value,
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

/// How long a partly filled batch waits for more keys before it is sent.
const BATCH_LINGER: Duration = Duration::from_millis(10);

/// A batch endpoint: many keys per POST.
struct Batch {
    size: usize,
    url: Template,
    body: Template,
    results: String,
    key: String,
    pending: Mutex<Vec<Waiting>>,
}

/// A key waiting for its batch.
struct Waiting {
    value: (String, bool),
    req: Request,
    tx: tokio::sync::oneshot::Sender<Outcome>,
}

/// Distinct requests waiting for a call, and the tasks that call them.
///
/// A key seen for the first time joins the queue (a request and the channel its answer
/// goes to); at most `concurrency` runner tasks (plus one per runner waiting out a retry)
/// take keys from it in order and call them. A queued key costs its request and a
/// channel, not a task of its own: a batch of thousands of new keys is queued in
/// microseconds and the first request goes out at once.
#[derive(Default)]
struct CallQueue {
    items: std::collections::VecDeque<Queued>,
    /// Runner tasks alive.
    running: usize,
    /// Runners waiting out a retry's backoff or `Retry-After` (each lets one more run).
    sleeping: usize,
}

/// A distinct request waiting for a runner, and where its answer goes.
struct Queued {
    req: Request,
    tx: tokio::sync::oneshot::Sender<Outcome>,
}

/// Counts a runner as waiting out a retry while alive.
struct Sleeping<'a>(&'a Enricher);

impl Drop for Sleeping<'_> {
    fn drop(&mut self) {
        if let Ok(mut q) = self.0.queue.lock() {
            q.sleeping = q.sleeping.saturating_sub(1);
        }
    }
}

/// Keeps the count of runners right if a runner ends without finding the queue empty
/// (stopped or panicked).
struct Running<'a> {
    enricher: &'a Enricher,
    counted: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.counted {
            if let Ok(mut q) = self.enricher.queue.lock() {
                q.running = q.running.saturating_sub(1);
            }
        }
    }
}

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
    /// An answer echoing a secret was seen (and not cached); warned once.
    secret_echo_noted: std::sync::atomic::AtomicBool,
    client: reqwest::Client,
    /// The concurrency limit.
    pub limiter: Limiter,
    pacer: Pacer,
    budget: RetryBudget,
    cache: Option<Cache>,
    batch: Option<Batch>,
    seen: Mutex<Seen>,
    /// Keys waiting for a call (not in batch mode).
    queue: Mutex<CallQueue>,
    /// Runners calling keys from the queue at most (the most requests in flight).
    runners: usize,
    /// The call tasks started, stopped by [`Enricher::stop`] when the job ends.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Live counters.
    pub stats: Arc<EnrichStats>,
}

/// Answers kept for dedupe unless `max_keys_in_memory` says otherwise.
pub const DEFAULT_KEYS_IN_MEMORY: usize = 1_000_000;

/// The answers of distinct requests, shared by every row asking the same key: at most
/// `cap` kept, the oldest finished ones dropped first (answers still in flight stay, so
/// rows waiting on them keep sharing one call).
struct Seen {
    map: HashMap<String, SharedOutcome>,
    order: std::collections::VecDeque<String>,
    cap: usize,
}

impl Seen {
    fn new(cap: usize) -> Seen {
        Seen {
            map: HashMap::new(),
            order: std::collections::VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Keeps `key`'s answer; returns how many older finished answers were dropped.
    fn insert(&mut self, key: String, answer: SharedOutcome) -> u64 {
        self.map.insert(key.clone(), answer);
        self.order.push_back(key);
        let mut dropped = 0;
        // Each key is looked at once per insert at most: answers in flight go to the back.
        let mut budget = self.order.len();
        while self.map.len() > self.cap && budget > 0 {
            budget -= 1;
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            match self.map.get(&oldest) {
                Some(a) if a.peek().is_none() => self.order.push_back(oldest),
                Some(_) => {
                    self.map.remove(&oldest);
                    dropped += 1;
                }
                None => {}
            }
        }
        dropped
    }
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
    /// relative cache folder; an object-store cache opens with `spec.storage`.
    pub fn new(spec: &EnrichSpec, base: &Path) -> Result<Enricher> {
        let stage = |e: Error| match e {
            Error::Config(m) => Error::Config(format!("enrich '{}': {m}", spec.name)),
            other => other,
        };
        Enricher::build(spec, base).map_err(stage)
    }

    fn build(spec: &EnrichSpec, base: &Path) -> Result<Enricher> {
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
        let columns = Template::key_columns(&url, body.as_ref());
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
            Some(location) => {
                let ttl = spec
                    .cache_ttl
                    .as_deref()
                    .map(|t| parse_duration("cache_ttl", t))
                    .transpose()?;
                Some(Cache::open_at(location, base, &spec.storage, ttl)?)
            }
            None if spec.cache_ttl.is_some() => {
                return Err(Error::Config("cache_ttl needs a cache folder".into()))
            }
            None => None,
        };
        let batch = match &spec.batch {
            None => None,
            Some(b) => {
                if url.columns.len() != 1 || body.is_some() {
                    return Err(Error::Config(
                        "[enrich.batch] needs a url with exactly one {column} (the key) and no body"
                            .into(),
                    ));
                }
                if b.size == 0 {
                    return Err(Error::Config("batch size must be at least 1".into()));
                }
                let burl = Template::parse(&b.url, Target::Url, &mut secrets)?;
                if !burl.columns.is_empty() {
                    return Err(Error::Config(
                        "the batch url cannot use {column} placeholders".into(),
                    ));
                }
                let bbody = Template::parse(
                    b.body.as_deref().unwrap_or(r#"{"keys": {keys}}"#),
                    Target::Body,
                    &mut secrets,
                )?;
                if bbody.columns != ["keys"] {
                    return Err(Error::Config(
                        "the batch body must use {keys} (the JSON array of keys) and nothing else"
                            .into(),
                    ));
                }
                Some(Batch {
                    size: b.size,
                    url: burl,
                    body: bbody,
                    results: b.results.clone().unwrap_or_default(),
                    key: b.key.clone().unwrap_or_else(|| "/id".to_string()),
                    pending: Mutex::new(Vec::new()),
                })
            }
        };
        if batch.is_some() && !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        // Where requests may go: the templates spell out scheme, host and port (no row value
        // can choose them), within `allow_hosts` when given; redirects only to those hosts.
        let mut targets = vec![origin_of(&spec.name, "url", &url)?];
        if let Some(b) = &batch {
            targets.push(origin_of(&spec.name, "batch url", &b.url)?);
        }
        let allowed: Vec<String> = match &spec.allow_hosts {
            Some(list) => {
                for t in &targets {
                    if !host_allowed(list, t) {
                        return Err(Error::Config(format!(
                            "enrich '{}': {} is not in allow_hosts",
                            spec.name,
                            host_port(t)
                        )));
                    }
                }
                list.clone()
            }
            None => targets.iter().map(host_port).collect(),
        };
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(crate::tls::client_config()?)
            .redirect(redirect_policy(allowed))
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
            secret_echo_noted: std::sync::atomic::AtomicBool::new(false),
            client,
            limiter,
            pacer: Pacer::new(rate, spec.burst.unwrap_or(1)),
            budget: RetryBudget::new(retry_budget),
            cache,
            batch,
            seen: Mutex::new(Seen::new(
                spec.max_keys_in_memory.unwrap_or(DEFAULT_KEYS_IN_MEMORY),
            )),
            queue: Mutex::new(CallQueue::default()),
            runners: pool.max(1),
            tasks: Mutex::new(Vec::new()),
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
            key_value: url_values.into_iter().next().flatten(),
        }))
    }

    /// Stops every call task still running or waiting: the job ended (failed, or was
    /// dropped), and no request may go out on its behalf any more.
    pub fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        if let Ok(mut q) = self.queue.lock() {
            q.items.clear();
        }
        // The answers kept for dedupe are freed on a thread of their own: a million small
        // answers take tens of milliseconds to free, and the job is done with them.
        let answers = match self.seen.lock() {
            Ok(mut seen) => {
                let cap = seen.cap;
                std::mem::replace(&mut *seen, Seen::new(cap))
            }
            Err(_) => return,
        };
        if !answers.map.is_empty() {
            // If no thread can be started, they are freed here, with the failed spawn.
            let _ = std::thread::Builder::new()
                .name("sluice-enrich-free".into())
                .spawn(move || drop(answers));
        }
    }

    /// Queues `req` for a runner, starting one if fewer than allowed are running.
    fn queue_call(self: &Arc<Self>, req: Request) -> tokio::sync::oneshot::Receiver<Outcome> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        // If the lock is poisoned the sender is dropped: the key fails as "the call task
        // failed".
        self.with_queue(|q| q.items.push_back(Queued { req, tx }));
        rx
    }

    /// Changes the queue with `change`, then starts a runner if keys wait and fewer
    /// runners than allowed are running.
    fn with_queue(self: &Arc<Self>, change: impl FnOnce(&mut CallQueue)) {
        let start = match self.queue.lock() {
            Ok(mut q) => {
                change(&mut q);
                let start = !q.items.is_empty() && q.running < self.runners + q.sleeping;
                if start {
                    q.running += 1;
                }
                start
            }
            Err(_) => false,
        };
        if start {
            let this = Arc::clone(self);
            self.spawn(async move { this.run_calls().await });
        }
    }

    /// A runner: calls queued keys in order until the queue is empty.
    async fn run_calls(self: Arc<Self>) {
        let mut running = Running {
            enricher: &self,
            counted: true,
        };
        loop {
            let next = match self.queue.lock() {
                Ok(mut q) => match q.items.pop_front() {
                    Some(w) => w,
                    None => {
                        q.running = q.running.saturating_sub(1);
                        running.counted = false;
                        return;
                    }
                },
                Err(_) => return,
            };
            let outcome = self.fetch(next.req).await;
            let _ = next.tx.send(outcome);
        }
    }

    /// Marks the calling runner as waiting out a retry until the guard drops, and starts
    /// another runner if keys are queued, so a wait costs the stage no throughput.
    fn sleeping(self: &Arc<Self>) -> Sleeping<'_> {
        self.with_queue(|q| q.sleeping += 1);
        Sleeping(self)
    }

    /// Spawns a call task that [`Enricher::stop`] can stop.
    fn spawn<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        let task = tokio::spawn(fut);
        if let Ok(mut tasks) = self.tasks.lock() {
            // Finished tasks are dropped now and then, so the list stays as long as the
            // calls in flight.
            if tasks.len() >= 1024 && tasks.len().is_power_of_two() {
                tasks.retain(|t| !t.is_finished());
            }
            tasks.push(task.abort_handle());
        }
        task
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
        if let Some(s) = seen.map.get(&key) {
            return s.clone();
        }
        self.stats.distinct_keys.fetch_add(1, Ordering::Relaxed);
        let shown = request.shown.clone();
        let lost = move |e: String| {
            Outcome::Failed(Failure {
                status: None,
                message: format!("the call task failed: {e}"),
                attempts: 0,
                url: shown,
            })
        };
        let fut = if self.batch.is_some() {
            let rx = self.enqueue(request);
            async move { Arc::new(rx.await.unwrap_or_else(|e| lost(e.to_string()))) }
                .boxed()
                .shared()
        } else {
            let rx = self.queue_call(request);
            async move { Arc::new(rx.await.unwrap_or_else(|e| lost(e.to_string()))) }
                .boxed()
                .shared()
        };
        let forgotten = seen.insert(key, fut.clone());
        self.stats
            .keys_forgotten
            .fetch_add(forgotten, Ordering::Relaxed);
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
    async fn fetch(self: &Arc<Self>, req: Request) -> Outcome {
        let cache_key = req.key(self.method.as_str());
        if let Some(body) = self.cached(&cache_key).await {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return self.parse(&body, &req, 0);
        }
        match self.call(&self.method, &req, Some(&cache_key)).await {
            Ok((body, attempts)) => self.parse(&body, &req, attempts),
            Err(failure) => {
                self.stats.failed_keys.fetch_add(1, Ordering::Relaxed);
                Outcome::Failed(failure)
            }
        }
    }

    /// The cached answer for `key`, if any.
    async fn cached(&self, key: &str) -> Option<Vec<u8>> {
        match &self.cache {
            Some(cache) => cache.load(key).await,
            None => None,
        }
    }

    async fn cache_put(&self, key: &str, body: &[u8]) {
        if let Some(cache) = &self.cache {
            // Nothing secret is stored: an answer that echoes a secret (in any encoding) is
            // used for this run and never cached.
            if self.secrets.found_in(body) {
                if !self.secret_echo_noted.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "enrich '{}': the API echoes a secret in its answers: those answers are not cached",
                        self.name
                    );
                }
                return;
            }
            if let Err(e) = cache.store(key, body.to_vec()).await {
                tracing::warn!("enrich '{}': cache: {e}", self.name);
            }
        }
    }

    /// Sends `req` until a 2xx answer (its body and the attempts it took), a failure that is
    /// not retried, or no retry left. A 2xx answer is stored in the cache under `cache_key`
    /// before the call gives up its concurrency slot, so a run killed at any moment has at
    /// most `concurrency` answers received but not kept (the ones a rerun asks again).
    async fn call(
        self: &Arc<Self>,
        method: &reqwest::Method,
        req: &Request,
        cache_key: Option<&str>,
    ) -> std::result::Result<(Vec<u8>, u32), Failure> {
        self.budget.first_attempt();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (result, latency) = {
                let _permit = {
                    let _waiting = self.stats.waiting(Wait::Concurrency);
                    self.limiter.acquire().await
                };
                self.pacer.acquire(&self.stats).await;
                let started = self.stats.call_started();
                let result = self.send(method, req).await;
                let latency = started.elapsed();
                self.stats.call_ended(latency);
                if let (Some(key), Ok((status, _, body))) = (cache_key, &result) {
                    if (200..300).contains(status) {
                        self.cache_put(key, body).await;
                    }
                }
                (result, latency)
            };
            let (cause, status, wait_at_least, message, crowd) = match result {
                Ok((status, _, body)) if (200..300).contains(&status) => {
                    self.limiter.record(Signal::Ok, latency);
                    self.pacer.observe(false);
                    return Ok((body, attempt));
                }
                Ok((status, retry_after_header, body)) => {
                    let congested = status == 429 || status == 503;
                    let signal = if congested {
                        Signal::Congested
                    } else {
                        Signal::Ok
                    };
                    self.limiter.record(signal, latency);
                    let crowd = self.pacer.observe(congested);
                    let wait = retry_after_header.filter(|_| congested);
                    let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)])
                        .trim()
                        .to_string();
                    let message = if excerpt.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        format!("HTTP {status}: {excerpt}")
                    };
                    (status.to_string(), Some(status), wait, message, crowd)
                }
                Err((cause, message)) => {
                    let congested = cause == "timeout" || cause == "connect";
                    if congested {
                        self.limiter.record(Signal::Congested, latency);
                    }
                    let crowd = self.pacer.observe(congested);
                    (cause.to_string(), None, None, message, crowd)
                }
            };
            self.stats.failure(&cause);
            let retryable = match status {
                Some(s) => matches!(s, 408 | 429 | 500 | 502 | 503 | 504),
                None => cause != "body_too_large" && cause != "redirect",
            };
            let mut message = message;
            if retryable && attempt <= self.retries {
                if self.budget.try_retry() {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let backoff = backoff(attempt - 1, self.backoff, self.max_backoff);
                    match wait_at_least {
                        // The API named a time: this request waits it out (never earlier);
                        // the whole stage waits only when most answers say slow down.
                        Some(ra) => {
                            if crowd {
                                self.pacer.pause_until(Instant::now() + ra);
                                self.stats.paused_all.fetch_add(1, Ordering::Relaxed);
                            }
                            let _waiting = self.stats.waiting(Wait::RetryAfter);
                            let _sleeping = self.sleeping();
                            tokio::time::sleep(backoff.max(ra)).await;
                        }
                        None => {
                            let _waiting = self.stats.waiting(Wait::Backoff);
                            let _sleeping = self.sleeping();
                            tokio::time::sleep(backoff).await;
                        }
                    }
                    continue;
                }
                self.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                message.push_str(" (no retry: the retry budget is spent)");
            }
            let message = format!(
                "{method} {}: {message} after {attempt} attempt{}",
                req.shown,
                if attempt == 1 { "" } else { "s" }
            );
            return Err(self.failure(status, message, attempt, req));
        }
    }

    /// One attempt: status, `Retry-After`, body (capped).
    async fn send(
        &self,
        method: &reqwest::Method,
        req: &Request,
    ) -> std::result::Result<(u16, Option<Duration>, Vec<u8>), (&'static str, String)> {
        let mut rb = self
            .client
            .request(method.clone(), &req.url)
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

    /// Queues a key for its batch; the batch goes when full or after [`BATCH_LINGER`].
    fn enqueue(self: &Arc<Self>, req: Request) -> tokio::sync::oneshot::Receiver<Outcome> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let Some(batch) = &self.batch else {
            return rx;
        };
        let value = req.key_value.clone().unwrap_or_default();
        let Ok(mut pending) = batch.pending.lock() else {
            return rx;
        };
        pending.push(Waiting { value, req, tx });
        if pending.len() >= batch.size {
            let items = std::mem::take(&mut *pending);
            let this = Arc::clone(self);
            self.spawn(async move { this.fetch_batch(items).await });
        } else if pending.len() == 1 {
            let this = Arc::clone(self);
            self.spawn(async move {
                tokio::time::sleep(BATCH_LINGER).await;
                let items: Vec<Waiting> = match &this.batch {
                    Some(b) => b
                        .pending
                        .lock()
                        .map(|mut p| std::mem::take(&mut *p))
                        .unwrap_or_default(),
                    None => return,
                };
                if !items.is_empty() {
                    this.fetch_batch(items).await;
                }
            });
        }
        rx
    }

    /// Answers a batch of keys: cached ones from the cache, the rest with one POST.
    async fn fetch_batch(self: &Arc<Self>, items: Vec<Waiting>) {
        let Some(batch) = &self.batch else { return };
        let mut send = Vec::with_capacity(items.len());
        for w in items {
            let key = w.req.key(self.method.as_str());
            match self.cached(&key).await {
                Some(body) => {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    let _ = w.tx.send(self.parse(&body, &w.req, 0));
                }
                None => send.push(w),
            }
        }
        if send.is_empty() {
            return;
        }
        let keys: Vec<String> = send
            .iter()
            .map(|w| match &w.value {
                (v, true) => v.clone(),
                (v, false) => serde_json::Value::String(v.clone()).to_string(),
            })
            .collect();
        let keys = format!("[{}]", keys.join(","));
        let rendered = batch.url.render(&[], &self.secrets).and_then(|u| {
            batch
                .body
                .render(&[Some((keys, true))], &self.secrets)
                .map(|b| (u, b))
        });
        let ((url, shown), (body, body_shown)) = match rendered {
            Ok(r) => r,
            Err(e) => {
                for w in send {
                    let f = self.failure(None, e.clone(), 0, &w.req);
                    self.stats.failed_keys.fetch_add(1, Ordering::Relaxed);
                    let _ = w.tx.send(Outcome::Failed(f));
                }
                return;
            }
        };
        let breq = Request {
            url,
            shown,
            body: Some(body),
            body_shown: Some(body_shown),
            key_value: None,
        };
        let answer = match self.call(&reqwest::Method::POST, &breq, None).await {
            Ok((bytes, attempts)) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(json) => match json.pointer(&batch.results).and_then(|a| a.as_array()) {
                    Some(items) => Ok((items.clone(), attempts)),
                    None => Err(format!(
                        "POST {}: the batch response has no array at '{}'",
                        breq.shown, batch.results
                    )),
                },
                Err(e) => Err(format!(
                    "POST {}: the response is not JSON ({e})",
                    breq.shown
                )),
            },
            Err(f) => Err(f.message),
        };
        match answer {
            Ok((results, attempts)) => {
                let mut by_key: HashMap<String, &serde_json::Value> = HashMap::new();
                for item in &results {
                    let key = match item.pointer(&batch.key) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                        None => continue,
                    };
                    by_key.insert(key, item);
                }
                for w in send {
                    let outcome = match by_key.get(&w.value.0) {
                        Some(item) => {
                            self.cache_put(
                                &w.req.key(self.method.as_str()),
                                item.to_string().as_bytes(),
                            )
                            .await;
                            self.extract_from(item, &w.req, attempts)
                        }
                        None => {
                            self.stats.failed_keys.fetch_add(1, Ordering::Relaxed);
                            let message = format!(
                                "POST {}: key '{}' is not in the batch response",
                                breq.shown, w.value.0
                            );
                            Outcome::Failed(self.failure(Some(200), message, attempts, &w.req))
                        }
                    };
                    let _ = w.tx.send(outcome);
                }
            }
            Err(message) => {
                for w in send {
                    self.stats.failed_keys.fetch_add(1, Ordering::Relaxed);
                    let f = self.failure(None, message.clone(), 0, &w.req);
                    let _ = w.tx.send(Outcome::Failed(f));
                }
            }
        }
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
        self.extract_from(&json, req, attempts)
    }

    /// Extracts the new columns from one JSON answer.
    fn extract_from(&self, json: &serde_json::Value, req: &Request, attempts: u32) -> Outcome {
        let mut values = Vec::with_capacity(self.extract.len());
        for (name, spec) in &self.extract {
            match extract_value(json, spec) {
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

/// The origin of a URL template, parsed; an error when a placeholder or secret could choose
/// the scheme, host or port, or the scheme is not HTTP.
fn origin_of(stage: &str, what: &str, t: &Template) -> Result<reqwest::Url> {
    let bad = |why: &str| Error::Config(format!("enrich '{stage}': the {what} {why}"));
    let origin = t.origin().ok_or_else(|| {
        bad("must spell out its scheme, host and port: placeholders and secrets may only fill the path and query")
    })?;
    let parsed = reqwest::Url::parse(origin).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("must start with http:// or https:// and a host"));
    }
    Ok(parsed)
}

/// `host:port` of a URL (the scheme's port when none is written).
fn host_port(url: &reqwest::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// True when `url`'s host is listed: as `host` (any port) or as `host:port`.
fn host_allowed(allowed: &[String], url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let hp = host_port(url);
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(&hp))
}

/// Follows at most 10 redirects, only to allowed hosts and never from https to http: custom
/// headers (an API key) would otherwise be sent wherever the API points.
fn redirect_policy(allowed: Vec<String>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else if downgrade {
            attempt.error("redirected from https to http: not followed")
        } else if !host_allowed(&allowed, attempt.url()) {
            let to = host_port(attempt.url());
            attempt.error(format!(
                "redirected to {to}, which allow_hosts does not list: not followed"
            ))
        } else {
            attempt.follow()
        }
    })
}

/// Names the cause of a transport error and describes it without the URL (which may hold a
/// secret; the caller adds the redacted one).
fn classify(e: &reqwest::Error) -> (&'static str, String) {
    let cause = if e.is_redirect() {
        "redirect"
    } else if e.is_timeout() {
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
