//! Test fixtures for sluice: a loopback HTTP API server with fault injection and counters.
//!
//! The server is a small HTTP/1.1 implementation on tokio, written for tests: it must be able
//! to misbehave on purpose (drop a connection without answering, answer slowly, answer 429
//! with `Retry-After`) and to count precisely (requests per path, requests in flight and the
//! peak, arrival times), which general-purpose servers make awkward. It keeps connections
//! alive like a real API, so clients reuse them.
//!
//! ```no_run
//! # async fn demo() {
//! use sluice_testkit::{ApiServer, Reply};
//! let server = ApiServer::start(|req| Reply::json(200, format!("{{\"path\":\"{}\"}}", req.path))).await;
//! let url = server.url("/meta/1");
//! # }
//! ```

pub mod moto;
pub mod stores;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request as the handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The raw path and query, still percent-encoded (`/meta/a%2Fb?x=1`).
    pub target: String,
    /// The path without the query, still percent-encoded.
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
    /// How many requests for this exact target arrived before this one (0 for the first).
    pub seen_before: u64,
}

impl Request {
    /// The last path segment, percent-decoded.
    pub fn last_segment(&self) -> String {
        let seg = self.path.rsplit('/').next().unwrap_or_default();
        percent_decode(seg)
    }
}

/// What the server does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with a status, headers and a body, after an optional delay.
    Respond {
        /// HTTP status.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Body bytes.
        body: Vec<u8>,
        /// Wait this long before answering.
        delay: Duration,
    },
    /// Close the connection without answering (after an optional delay).
    Drop(Duration),
}

impl Reply {
    /// A JSON answer with no delay.
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into().into_bytes(),
            delay: Duration::ZERO,
        }
    }

    /// A plain status with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// The same reply after `delay`.
    pub fn after(self, delay: Duration) -> Reply {
        match self {
            Reply::Respond {
                status,
                headers,
                body,
                ..
            } => Reply::Respond {
                status,
                headers,
                body,
                delay,
            },
            Reply::Drop(_) => Reply::Drop(delay),
        }
    }

    /// The same reply with one more header.
    pub fn header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Respond {
                status,
                mut headers,
                body,
                delay,
            } => {
                headers.push((name.into(), value.into()));
                Reply::Respond {
                    status,
                    headers,
                    body,
                    delay,
                }
            }
            other => other,
        }
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// Counters kept by the server.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests received (each attempt counts).
    pub requests: AtomicU64,
    /// Requests being handled now.
    pub in_flight: AtomicU64,
    /// The most requests ever handled at once.
    pub max_in_flight: AtomicU64,
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// Client think time: from an answer written to the next request line received on
    /// the same connection, summed (nanoseconds) over [`Counters::gaps`] gaps.
    pub gap_ns: AtomicU64,
    /// How many such gaps were timed.
    pub gaps: AtomicU64,
    per_target: Mutex<HashMap<String, u64>>,
    arrivals: Mutex<Vec<(Instant, String)>>,
    headers_seen: Mutex<Vec<String>>,
}

impl Counters {
    /// Requests for each target (path and query) so far.
    pub fn per_target(&self) -> HashMap<String, u64> {
        self.per_target
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Arrival time and target of every request, in order.
    pub fn arrivals(&self) -> Vec<(Instant, String)> {
        self.arrivals.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Every header line received (`name: value`), for secret checks.
    pub fn headers_seen(&self) -> Vec<String> {
        self.headers_seen
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }

    /// The most requests that arrived within any window of `window`.
    pub fn max_in_window(&self, window: Duration) -> usize {
        let times: Vec<Instant> = self.arrivals().into_iter().map(|(t, _)| t).collect();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    /// Requests per second between the first and the last arrival.
    pub fn rate(&self) -> f64 {
        let a = self.arrivals();
        match (a.first(), a.last()) {
            (Some(f), Some(l)) if a.len() > 1 => {
                (a.len() - 1) as f64 / l.0.duration_since(f.0).as_secs_f64().max(1e-9)
            }
            _ => 0.0,
        }
    }
}

/// A running server; stops when dropped.
pub struct ApiServer {
    addr: std::net::SocketAddr,
    /// What the server counted.
    pub counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiServer {
    /// Starts a server on 127.0.0.1 (a free port) answering with `handler`.
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        Self::serve(listener, Arc::new(handler))
    }

    /// Starts a server on an existing listener.
    pub fn serve(listener: TcpListener, handler: Handler) -> ApiServer {
        let addr = listener.local_addr().expect("local addr");
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                c.connections.fetch_add(1, Ordering::Relaxed);
                let (c, h) = (Arc::clone(&c), Arc::clone(&handler));
                tokio::spawn(async move {
                    let _ = connection(stream, c, h).await;
                });
            }
        });
        ApiServer {
            addr,
            counters,
            task,
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

/// Serves one keep-alive connection.
async fn connection(
    stream: TcpStream,
    counters: Arc<Counters>,
    handler: Handler,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut answered: Option<Instant> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        if let Some(at) = answered.take() {
            let gap = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
            counters.gap_ns.fetch_add(gap, Ordering::Relaxed);
            counters.gaps.fetch_add(1, Ordering::Relaxed);
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return Ok(());
        };
        let (method, target) = (method.to_string(), target.to_string());
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Ok(mut seen) = counters.headers_seen.lock() {
                seen.push(h.to_string());
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).await?;
        let seen_before = {
            let mut m = counters
                .per_target
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?;
            let n = m.entry(target.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        if let Ok(mut a) = counters.arrivals.lock() {
            a.push((Instant::now(), target.clone()));
        }
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let request = Request {
            method,
            path: target.split('?').next().unwrap_or_default().to_string(),
            target,
            headers,
            body,
            seen_before,
        };
        let reply = handler(&request);
        let result = match reply {
            Reply::Drop(delay) => {
                precise_sleep(delay).await;
                counters.in_flight.fetch_sub(1, Ordering::SeqCst);
                return Ok(());
            }
            Reply::Respond {
                status,
                headers,
                body,
                delay,
            } => {
                precise_sleep(delay).await;
                let mut head = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\n",
                    reason(status),
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                counters.in_flight.fetch_sub(1, Ordering::SeqCst);
                let mut out = head.into_bytes();
                // A HEAD answer announces the body's length but carries no body.
                if request.method != "HEAD" {
                    out.extend_from_slice(&body);
                }
                let written = write.write_all(&out).await;
                answered = Some(Instant::now());
                written
            }
        };
        result?;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The standard fake metadata API used by sluice's tests and benchmark:
/// `GET /meta/{id}` answers `{"id": id, "title": "title-{id}", "owner": {"name":
/// "owner-{id}"}, "score": <length of id>}`; `POST /meta/batch` with `{"ids": [...]}`
/// answers `{"items": [<the same object per id>]}`. Anything else is 404.
pub fn meta_api(latency: Duration) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    move |req: &Request| {
        if req.method == "POST" && req.path == "/meta/batch" {
            let ids: Vec<serde_json::Value> =
                serde_json::from_slice::<serde_json::Value>(&req.body)
                    .ok()
                    .and_then(|v| v.get("ids").and_then(|a| a.as_array().cloned()))
                    .unwrap_or_default();
            let items: Vec<serde_json::Value> = ids
                .iter()
                .map(|id| {
                    meta_object(&match id {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                })
                .collect();
            return Reply::json(200, serde_json::json!({ "items": items }).to_string())
                .after(latency);
        }
        if req.path.starts_with("/meta/") {
            let id = req.last_segment();
            return Reply::json(200, meta_object(&id).to_string()).after(latency);
        }
        Reply::status(404).after(latency)
    }
}

/// The object [`meta_api`] answers for one id.
pub fn meta_object(id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "title": format!("title-{id}"),
        "owner": { "name": format!("owner-{id}") },
        "score": id.chars().count(),
    })
}

/// Faults of [`faulty_api`], drawn per key from a seed: the same keys fail the same way on
/// every run, so runs compare.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Share of keys whose first call answers 500.
    pub error_500: f64,
    /// Share of keys whose first call answers 429 with `Retry-After`.
    pub too_many: f64,
    /// The `Retry-After` of those 429s, in seconds.
    pub retry_after_s: u64,
    /// Share of keys that are always 404.
    pub missing: f64,
    /// Seed of the draw.
    pub seed: u64,
}

/// What a key of [`faulty_api`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Answers at once.
    Ok,
    /// 500 on the first call.
    Error500,
    /// 429 with `Retry-After` on the first call.
    TooMany,
    /// Always 404.
    Missing,
}

impl Faults {
    /// What key `id` does.
    pub fn fate(&self, id: &str) -> Fate {
        // FNV-1a over the seed and the key, then a SplitMix64 finish: uniform enough.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ self.seed;
        for b in id.as_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.missing {
            Fate::Missing
        } else if u < self.missing + self.too_many {
            Fate::TooMany
        } else if u < self.missing + self.too_many + self.error_500 {
            Fate::Error500
        } else {
            Fate::Ok
        }
    }
}

/// [`meta_api`] with faults like a real API's (see [`Faults`]), answering after `latency`.
/// The counter it returns counts early retries: requests for a key that got a 429 arriving
/// before its `Retry-After` was over.
pub fn faulty_api(
    latency: Duration,
    faults: Faults,
) -> (
    impl Fn(&Request) -> Reply + Send + Sync + 'static,
    Arc<AtomicU64>,
) {
    let ok = meta_api(latency);
    let early = Arc::new(AtomicU64::new(0));
    let told: Mutex<HashMap<String, Instant>> = Mutex::new(HashMap::new());
    let counter = Arc::clone(&early);
    let handler = move |req: &Request| {
        if !req.path.starts_with("/meta/") || req.path == "/meta/batch" {
            return ok(req);
        }
        if let Ok(t) = told.lock() {
            if t.get(&req.target)
                .is_some_and(|until| Instant::now() < *until)
            {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        match (faults.fate(&req.last_segment()), req.seen_before) {
            (Fate::Missing, _) => Reply::status(404).after(latency),
            (Fate::TooMany, 0) => {
                let wait = Duration::from_secs(faults.retry_after_s);
                if let Ok(mut t) = told.lock() {
                    // The wait runs from when the answer leaves, after the latency.
                    t.insert(req.target.clone(), Instant::now() + latency + wait);
                }
                Reply::status(429)
                    .header("retry-after", &faults.retry_after_s.to_string())
                    .after(latency)
            }
            (Fate::Error500, 0) => Reply::status(500).after(latency),
            _ => ok(req),
        }
    };
    (handler, early)
}

/// [`meta_api`] behind a limit of `per_second` requests per second for everyone (a token
/// bucket with a burst of one second's worth): above it every request gets `429` with
/// `Retry-After: 1`, as an overloaded API answers.
pub fn overloaded_api(per_second: f64) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    let ok = meta_api(Duration::ZERO);
    let bucket = Mutex::new((per_second, Instant::now()));
    move |req: &Request| {
        let admitted = bucket.lock().is_ok_and(|mut b| {
            let now = Instant::now();
            let refill = now.duration_since(b.1).as_secs_f64() * per_second;
            b.0 = (b.0 + refill).min(per_second);
            b.1 = now;
            if b.0 >= 1.0 {
                b.0 -= 1.0;
                true
            } else {
                false
            }
        });
        if admitted {
            ok(req)
        } else {
            Reply::status(429).header("retry-after", "1")
        }
    }
}

/// A waiter of the precise timer: when to wake, and whom.
type Wake = (Instant, tokio::sync::oneshot::Sender<()>);

/// Waits `delay` to within a fraction of a millisecond. tokio's timer wheel rounds every
/// sleep up to its next millisecond tick and fires on the tick after that, so a 20 ms sleep
/// takes 21-22 ms: the test API would be slower than the latency it states (and a client's
/// time against "keys x latency / concurrency" would look worse than it is). One thread
/// sleeps until the earliest deadline (a futex wait with a timeout, precise to tens of
/// microseconds on Linux) and wakes each waiter.
pub async fn precise_sleep(delay: Duration) {
    if delay.is_zero() {
        return;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = precise_timer()
        .lock()
        .map(|t| t.send((Instant::now() + delay, tx)).is_ok())
        .unwrap_or(false);
    if sent {
        let _ = rx.await;
    } else {
        tokio::time::sleep(delay).await;
    }
}

fn precise_timer() -> &'static Mutex<std::sync::mpsc::Sender<Wake>> {
    static TIMER: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<Wake>>> =
        std::sync::OnceLock::new();
    TIMER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Wake>();
        std::thread::spawn(move || {
            let mut due: std::collections::BTreeMap<
                (Instant, u64),
                tokio::sync::oneshot::Sender<()>,
            > = std::collections::BTreeMap::new();
            let mut seq = 0u64;
            loop {
                let now = Instant::now();
                while let Some(entry) = due.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let _ = entry.remove().send(());
                }
                let next = match due.first_key_value() {
                    None => rx.recv().map_err(|_| ()),
                    Some(((at, _), _)) => {
                        match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                            Ok(w) => Ok(w),
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(()),
                        }
                    }
                };
                match next {
                    Ok((at, tx)) => {
                        seq += 1;
                        due.insert((at, seq), tx);
                    }
                    Err(()) => return,
                }
            }
        });
        Mutex::new(tx)
    })
}
