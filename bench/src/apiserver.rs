//! A loopback fake metadata API for the enrich benchmark and manual tries:
//! `apiserver [--latency-ms N] [--jitter-ms J] [--port P] [--faults [--fail-500 F]
//! [--fail-429 F] [--retry-after S] [--missing F] [--seed N]]` prints `listening on
//! http://127.0.0.1:PORT` and serves `GET /meta/{id}` and `POST /meta/batch` (see
//! `sluice_testkit::meta_api`) until killed. With `--jitter-ms J` (no faults) each answer
//! comes after the latency +- J ms, drawn evenly: the same mean, so the same floor, but the
//! connections no longer move in step. With `--faults` it behaves like a real API
//! (`sluice_testkit::faulty_api`: by default 2% of keys answer 500 and 1% answer 429 with
//! `Retry-After: 1` on their first call, 0.1% are always 404), and `GET /_stats` answers
//! `{"early_retries": N, "first_request": T, "last_request": T, "requests": N,
//! "max_in_flight": N, "client_gap_us": G}`: requests for a key that came
//! before its `Retry-After` was over (with `--faults`); when the first and the last request
//! since the previous `/_stats` arrived (Unix seconds); and how many requests came, and the
//! most in flight at once, since then (counted by the server itself); and `client_gap_us`,
//! the client's mean think time: from an answer written to the next request received on the
//! same connection. With `APISERVER_TIMELINE=1` each `/_stats` also prints to stderr the
//! requests that arrived in each 100 ms of the run. `apiserver --capacity` measures how many
//! requests per second it answers at zero latency on this machine, with 64 keep-alive
//! clients, and exits.
//!
//! `apiserver --probe URL [--keys N] [--concurrency C]` is the fastest client there is:
//! `C` keep-alive connections of raw HTTP/1.1 that ask `GET /meta/id00000` ...
//! `/meta/id{N-1}` of the server at `URL` and do nothing else; it prints the seconds they
//! took. On the same machine and server, that is the floor a real client can reach. With
//! `--reqwest` the same loop goes through a reqwest client built as sluice builds its own.

use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sluice_testkit::{faulty_api, meta_api, ApiServer, Faults, Reply, Request};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// What answers each request.
type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

#[tokio::main]
async fn main() {
    let latency = Duration::from_millis(
        arg("--latency-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
    );
    if std::env::args().any(|a| a == "--capacity") {
        capacity().await;
        return;
    }
    if let Some(url) = arg("--probe") {
        let keys = arg("--keys").and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let concurrency = arg("--concurrency")
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        if std::env::args().any(|a| a == "--reqwest") {
            probe_reqwest(&url, keys, concurrency).await;
        } else {
            probe(&url, keys, concurrency).await;
        }
        return;
    }
    let port: u16 = arg("--port").and_then(|v| v.parse().ok()).unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let (api, early): (Handler, _) = if std::env::args().any(|a| a == "--faults") {
        let share =
            |name: &str, default: f64| arg(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        let faults = Faults {
            error_500: share("--fail-500", 0.02),
            too_many: share("--fail-429", 0.01),
            retry_after_s: arg("--retry-after")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            missing: share("--missing", 0.001),
            seed: arg("--seed").and_then(|v| v.parse().ok()).unwrap_or(7),
        };
        let (api, early) = faulty_api(latency, faults);
        (Arc::new(api), Some(early))
    } else if let Some(jitter) = arg("--jitter-ms").and_then(|v| v.parse::<u64>().ok()) {
        // Each answer after latency +- jitter, drawn evenly (the same mean: the same floor),
        // from a seeded generator: the same draws every run.
        use rand::{Rng, SeedableRng};
        let api = meta_api(latency);
        let draws = std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(7));
        let spread = Duration::from_millis(jitter);
        let handler: Handler = Arc::new(move |req: &Request| {
            let u: f64 = draws.lock().map_or(0.5, |mut r| r.random());
            let delay = (latency + spread).saturating_sub(spread.mul_f64(2.0 * (1.0 - u)));
            api(req).after(delay)
        });
        (handler, None)
    } else {
        (Arc::new(meta_api(latency)), None)
    };
    // When the first and the last request of the API arrived (Unix seconds): with the
    // client's wall time they split it into start-up, calls and the rest.
    let span: Arc<std::sync::Mutex<Option<(f64, f64)>>> = Arc::default();
    // The server's own counters, once it runs: requests and peak in flight per run.
    let counters: Arc<std::sync::OnceLock<Arc<sluice_testkit::Counters>>> = Arc::default();
    let seen = Arc::clone(&counters);
    let requests_before = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let arrivals_before = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler: Handler = Arc::new(move |req: &Request| {
        if req.path == "/_stats" {
            // Requests and the most in flight at once since the previous `/_stats`.
            let (requests, peak, gap_us) = match seen.get() {
                Some(c) => {
                    let gap_ns = c.gap_ns.swap(0, Ordering::SeqCst);
                    let gaps = c.gaps.swap(0, Ordering::SeqCst);
                    let gap_us = gap_ns as f64 / 1000.0 / gaps.max(1) as f64;
                    if std::env::var_os("APISERVER_TIMELINE").is_some() {
                        let all = c.arrivals();
                        let from = arrivals_before.swap(all.len(), Ordering::SeqCst);
                        let run = &all[from.min(all.len())..];
                        if let (Some((t0, _)), Some((end, _))) = (run.first(), run.last()) {
                            let bucket = |t: &Instant| t.duration_since(*t0).as_millis() / 100;
                            let mut buckets = vec![0u32; bucket(end) as usize + 1];
                            for (t, _) in run {
                                buckets[bucket(t) as usize] += 1;
                            }
                            eprintln!("requests per 100 ms: {buckets:?}");
                        }
                    }
                    // Both counts include this request: it is not the run's.
                    let total = c.requests.load(Ordering::SeqCst);
                    let before = requests_before.swap(total, Ordering::SeqCst);
                    let peak = c.max_in_flight.swap(1, Ordering::SeqCst);
                    (total.saturating_sub(before).saturating_sub(1), peak, gap_us)
                }
                None => (0, 0, 0.0),
            };
            let n = early.as_ref().map_or(0, |e| e.load(Ordering::Relaxed));
            // Read and reset: each run of a client against one server gets its own span.
            let (first, last) = span
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .unwrap_or((0.0, 0.0));
            return Reply::json(
                200,
                format!("{{\"early_retries\":{n},\"first_request\":{first:.6},\"last_request\":{last:.6},\"requests\":{requests},\"max_in_flight\":{peak},\"client_gap_us\":{gap_us:.1}}}"),
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Ok(mut s) = span.lock() {
            let first = s.map_or(now, |(f, _)| f);
            *s = Some((first, now));
        }
        api(req)
    });
    let server = ApiServer::serve(listener, handler);
    let _ = counters.set(Arc::clone(&server.counters));
    println!("listening on {}", server.url(""));
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        eprintln!(
            "requests {} max in flight {}",
            server.counters.requests.load(Ordering::Relaxed),
            server.counters.max_in_flight.load(Ordering::Relaxed)
        );
    }
}

/// Requests per second the server answers with no latency, 64 clients, 3 seconds.
async fn capacity() {
    let server = ApiServer::start(meta_api(Duration::ZERO)).await;
    let addr = server.addr();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for c in 0..64 {
        tasks.push(tokio::spawn(async move {
            let mut conn = RawClient::connect(addr).await;
            let mut n = 0u64;
            while Instant::now() < deadline {
                conn.get(&format!("/meta/{c}-{n}")).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    println!(
        "capacity: {:.0} requests/s (64 keep-alive clients, zero latency)",
        total as f64 / 3.0
    );
}

/// One keep-alive connection speaking just enough HTTP/1.1 to ask for a path.
struct RawClient {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl RawClient {
    async fn connect(addr: std::net::SocketAddr) -> RawClient {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (r, w) = stream.into_split();
        RawClient {
            r: BufReader::new(r),
            w,
        }
    }

    /// `GET path`: the answer's status (its body is read and dropped).
    async fn get(&mut self, path: &str) -> u16 {
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
        self.w.write_all(req.as_bytes()).await.expect("write");
        let mut len = 0usize;
        let mut status = 0u16;
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).await.expect("read");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(rest) = line.strip_prefix("HTTP/1.1 ") {
                status = rest.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
            if let Some(v) = line.strip_prefix("content-length: ") {
                len = v.parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await.expect("body");
        status
    }
}

/// The bench's keys asked of the server at `url` by `concurrency` raw connections, timed.
async fn probe(url: &str, keys: usize, concurrency: usize) {
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let addr: std::net::SocketAddr = host.parse().expect("--probe http://HOST:PORT");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut conn = RawClient::connect(addr).await;
            let mut bad = 0u64;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= keys {
                    return bad;
                }
                if conn.get(&format!("/meta/id{k:05}")).await != 200 {
                    bad += 1;
                }
            }
        }));
    }
    finish("probe", tasks, started, keys).await;
}

/// Waits for a probe's tasks (each returns how many answers were not 200: there must be
/// none) and prints the seconds since `started`.
async fn finish(
    what: &str,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
    started: Instant,
    keys: usize,
) {
    let concurrency = tasks.len();
    let mut bad = 0;
    for t in tasks {
        bad += t.await.expect("probe task");
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(bad, 0, "the probe got {bad} answers that were not 200");
    println!("{what}: {keys} requests, {concurrency} in flight, {secs:.3} s");
}

/// [`probe`] with reqwest's client (as sluice builds it) in place of raw connections.
async fn probe_reqwest(url: &str, keys: usize, concurrency: usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, client, url) = (Arc::clone(&next), client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut bad = 0u64;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= keys {
                    return bad;
                }
                let resp = client
                    .get(format!("{url}/meta/id{k:05}"))
                    .send()
                    .await
                    .expect("send");
                if resp.status().as_u16() != 200 {
                    bad += 1;
                }
                let _ = resp.bytes().await.expect("body");
            }
        }));
    }
    finish("probe (reqwest)", tasks, started, keys).await;
}
