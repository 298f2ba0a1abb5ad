//! Live counters of an enrich stage, and its part of the report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Counters one enrich stage updates while it runs (read by the progress display).
#[derive(Debug, Default)]
pub struct EnrichStats {
    /// The stage's name.
    pub name: String,
    /// Rows that went through the stage.
    pub rows: AtomicU64,
    /// Distinct requests (keys) seen.
    pub distinct_keys: AtomicU64,
    /// Keys answered from the persistent cache.
    pub cache_hits: AtomicU64,
    /// HTTP requests sent (each attempt counts).
    pub calls: AtomicU64,
    /// Attempts after the first.
    pub retries: AtomicU64,
    /// Keys whose call failed after retries.
    pub failed_keys: AtomicU64,
    /// Rows whose call failed (rejected, nulled or failing the job).
    pub failed_rows: AtomicU64,
    /// Rows with a NULL placeholder value (no call made).
    pub null_keys: AtomicU64,
    /// Requests in flight now.
    pub in_flight: AtomicU64,
    /// Most requests in flight at once.
    pub max_in_flight: AtomicU64,
    /// Retries refused because the retry budget was spent.
    pub budget_exhausted: AtomicU64,
    /// Times the whole stage paused because most answers said slow down.
    pub paused_all: AtomicU64,
    /// Finished answers dropped from memory (`max_keys_in_memory`).
    pub keys_forgotten: AtomicU64,
    /// Time requests spent waiting, by cause, in microseconds (see [`Wait`]).
    waits_us: [AtomicU64; 5],
    /// Wall time during which at least one request waited, by cause.
    walls: [Mutex<Overlap>; 5],
    failures: Mutex<BTreeMap<String, u64>>,
    latencies_us: Mutex<Vec<u32>>,
    window: Mutex<Option<(Instant, Instant)>>,
}

/// What a request waited for before it was sent (or sent again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A free slot under the concurrency limit.
    Concurrency = 0,
    /// The rate limit (`rate_limit`).
    RateLimit = 1,
    /// Its own `Retry-After` (a 429 or 503 for this request).
    RetryAfter = 2,
    /// Backoff between retries without a `Retry-After`.
    Backoff = 3,
    /// A pause of the whole stage (most answers said slow down).
    Paused = 4,
}

/// The wall time covered by overlapping waits of one cause: how many requests wait now,
/// since when at least one has, and the time covered before that.
#[derive(Debug, Default)]
struct Overlap {
    waiting: u64,
    since: Option<Instant>,
    covered: Duration,
}

/// One request waiting for one cause, from [`EnrichStats::waiting`] until it is dropped
/// (also when the request is cancelled mid-wait).
#[must_use = "the wait lasts until the guard is dropped"]
#[derive(Debug)]
pub struct Waiting<'a> {
    stats: &'a EnrichStats,
    why: Wait,
    since: Instant,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let d = now.duration_since(self.since);
        if !d.is_zero() {
            self.stats.waits_us[self.why as usize].fetch_add(
                d.as_micros().min(u64::MAX as u128) as u64,
                Ordering::Relaxed,
            );
        }
        if let Ok(mut o) = self.stats.walls[self.why as usize].lock() {
            o.waiting = o.waiting.saturating_sub(1);
            if o.waiting == 0 {
                if let Some(since) = o.since.take() {
                    o.covered += now.duration_since(since);
                }
            }
        }
    }
}

impl EnrichStats {
    /// Marks one request as waiting for `why` until the returned guard drops. Each wait
    /// adds its length to the request-seconds of its cause, and the time during which at
    /// least one request waits for a cause is that cause's wall time.
    pub fn waiting(&self, why: Wait) -> Waiting<'_> {
        let since = Instant::now();
        if let Ok(mut o) = self.walls[why as usize].lock() {
            if o.waiting == 0 {
                o.since = Some(since);
            }
            o.waiting += 1;
        }
        Waiting {
            stats: self,
            why,
            since,
        }
    }

    fn waited_s(&self, why: Wait) -> f64 {
        self.waits_us[why as usize].load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Seconds of wall time during which at least one request waited for `why` (waits
    /// still under way count up to now).
    fn wall_s(&self, why: Wait) -> f64 {
        self.walls[why as usize]
            .lock()
            .map(|o| {
                let open = o.since.map(|s| s.elapsed()).unwrap_or_default();
                (o.covered + open).as_secs_f64()
            })
            .unwrap_or(0.0)
    }

    fn waits(&self, of: impl Fn(&Self, Wait) -> f64) -> Waits {
        Waits {
            concurrency: of(self, Wait::Concurrency),
            rate_limit: of(self, Wait::RateLimit),
            retry_after: of(self, Wait::RetryAfter),
            backoff: of(self, Wait::Backoff),
            paused: of(self, Wait::Paused),
        }
    }

    /// Counters for the stage `name`.
    pub fn new(name: &str) -> EnrichStats {
        EnrichStats {
            name: name.to_string(),
            ..EnrichStats::default()
        }
    }

    /// Marks a request as sent; returns when it started.
    pub fn call_started(&self) -> Instant {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let start = Instant::now();
        if let Ok(mut w) = self.window.lock() {
            let (first, _) = w.get_or_insert((start, start));
            *w = Some((*first, start));
        }
        start
    }

    /// Marks a request as answered (or failed) after `latency`.
    pub fn call_ended(&self, latency: Duration) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut l) = self.latencies_us.lock() {
            l.push(latency.as_micros().min(u32::MAX as u128) as u32);
        }
        if let Ok(mut w) = self.window.lock() {
            if let Some((first, _)) = *w {
                *w = Some((first, Instant::now()));
            }
        }
    }

    /// Counts a failed attempt by its cause (`"500"`, `"429"`, `"timeout"`, `"connect"`...).
    pub fn failure(&self, cause: &str) {
        if let Ok(mut f) = self.failures.lock() {
            *f.entry(cause.to_string()).or_default() += 1;
        }
    }

    /// Seconds between the first request and the latest answer.
    fn calling_s(&self) -> f64 {
        self.window
            .lock()
            .ok()
            .and_then(|w| *w)
            .map(|(a, b)| b.duration_since(a).as_secs_f64())
            .unwrap_or(0.0)
    }

    /// Requests per second so far (between the first and the latest request).
    pub fn rate(&self) -> f64 {
        let span = self.calling_s();
        if span > 0.0 {
            self.calls.load(Ordering::Relaxed) as f64 / span
        } else {
            0.0
        }
    }

    /// The report of the stage; `limit` is the concurrency limit at the end.
    pub fn report(&self, limit: usize) -> EnrichReport {
        let mut lat = self
            .latencies_us
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        lat.sort_unstable();
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
            lat[i.min(lat.len() - 1)] as f64 / 1000.0
        };
        let calls = self.calls.load(Ordering::Relaxed);
        EnrichReport {
            name: self.name.clone(),
            rows: self.rows.load(Ordering::Relaxed),
            distinct_keys: self.distinct_keys.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            calls,
            retries: self.retries.load(Ordering::Relaxed),
            failed_keys: self.failed_keys.load(Ordering::Relaxed),
            failed_rows: self.failed_rows.load(Ordering::Relaxed),
            null_keys: self.null_keys.load(Ordering::Relaxed),
            failures_by_cause: self.failures.lock().map(|f| f.clone()).unwrap_or_default(),
            latency_ms_p50: pct(0.5),
            latency_ms_p95: pct(0.95),
            latency_ms_max: pct(1.0),
            requests_per_second: self.rate(),
            calling_s: self.calling_s(),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            final_concurrency: limit,
            retry_budget_exhausted: self.budget_exhausted.load(Ordering::Relaxed),
            waited_s: self.waits(Self::waited_s),
            waited_wall_s: self.waits(Self::wall_s),
            paused_all: self.paused_all.load(Ordering::Relaxed),
            keys_forgotten: self.keys_forgotten.load(Ordering::Relaxed),
        }
    }
}

/// What an enrich stage did (in `--report-json` under `enrich`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct EnrichReport {
    /// The stage.
    pub name: String,
    /// Rows that went through it.
    pub rows: u64,
    /// Distinct requests.
    pub distinct_keys: u64,
    /// Distinct requests answered from the cache.
    pub cache_hits: u64,
    /// HTTP requests sent, retries included.
    pub calls: u64,
    /// Retries.
    pub retries: u64,
    /// Distinct requests that failed after retries.
    pub failed_keys: u64,
    /// Rows whose request failed.
    pub failed_rows: u64,
    /// Rows with a NULL placeholder value (no request).
    pub null_keys: u64,
    /// Failed attempts by cause: HTTP status, `timeout`, `connect`, `body`...
    pub failures_by_cause: BTreeMap<String, u64>,
    /// Median latency of a request, in milliseconds.
    pub latency_ms_p50: f64,
    /// 95th percentile latency.
    pub latency_ms_p95: f64,
    /// Slowest request.
    pub latency_ms_max: f64,
    /// Requests per second between the first and the last request.
    pub requests_per_second: f64,
    /// Seconds from the first request to the last answer (on a cluster, the longest
    /// task's).
    #[serde(default)]
    pub calling_s: f64,
    /// Most requests in flight at once.
    pub max_in_flight: u64,
    /// The concurrency limit at the end (moves with `concurrency = "auto"`).
    pub final_concurrency: usize,
    /// Retries refused because the retry budget was spent.
    pub retry_budget_exhausted: u64,
    /// Request-seconds spent waiting, by cause: the sum over requests (so with 32 in flight,
    /// 32 s of waiting can pass in one second of wall time).
    pub waited_s: Waits,
    /// Seconds of the stage's wall time during which at least one request waited, by
    /// cause: how much of the run a cause held requests back. Causes overlap, so they can
    /// add up to more than the run; on a cluster, the longest task's figure.
    #[serde(default)]
    pub waited_wall_s: Waits,
    /// Times the whole stage paused because most answers said slow down.
    pub paused_all: u64,
    /// Finished answers dropped from memory past `max_keys_in_memory` (a key asked again
    /// after that came from the cache or was called again).
    pub keys_forgotten: u64,
}

/// Seconds an enrich stage's requests spent waiting, by cause.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct Waits {
    /// For a slot under the concurrency limit.
    pub concurrency: f64,
    /// For the rate limit.
    pub rate_limit: f64,
    /// For their own `Retry-After`.
    pub retry_after: f64,
    /// Backing off between retries (no `Retry-After`).
    pub backoff: f64,
    /// In pauses of the whole stage.
    pub paused: f64,
}

impl Waits {
    /// Each cause of `self` and `other` combined by `f`.
    fn zip(&self, other: &Waits, f: impl Fn(f64, f64) -> f64) -> Waits {
        Waits {
            concurrency: f(self.concurrency, other.concurrency),
            rate_limit: f(self.rate_limit, other.rate_limit),
            retry_after: f(self.retry_after, other.retry_after),
            backoff: f(self.backoff, other.backoff),
            paused: f(self.paused, other.paused),
        }
    }
}

impl EnrichReport {
    /// What the stage's requests waited for, by cause, as one line (`None` when they
    /// hardly waited): the wall time each cause held requests back, then the
    /// request-seconds, then how often the whole stage paused.
    pub fn waits_line(&self) -> Option<String> {
        let (w, s) = (&self.waited_wall_s, &self.waited_s);
        let waits: Vec<String> = [
            ("concurrency limit", w.concurrency, s.concurrency),
            ("rate limit", w.rate_limit, s.rate_limit),
            ("Retry-After", w.retry_after, s.retry_after),
            ("backoff", w.backoff, s.backoff),
            ("stage paused", w.paused, s.paused),
        ]
        .iter()
        .filter(|(_, _, req)| *req >= 0.05)
        .map(|(what, wall, req)| format!("{what} {wall:.2} s ({req:.1} request-s)"))
        .collect();
        if waits.is_empty() {
            return None;
        }
        let pauses = if self.paused_all > 0 {
            format!(
                "; {} pauses of the whole stage (most answers said slow down)",
                self.paused_all
            )
        } else {
            String::new()
        };
        Some(format!(
            "waited (wall time with requests waiting): {}{pauses}",
            waits.join(", ")
        ))
    }

    /// Adds the report of another task of the same stage (on a cluster each task of the
    /// stage calls for its own keys): counts and waits add up; requests per second, the
    /// peak in flight and the final concurrency add up too (the tasks run side by side,
    /// so the sum bounds the stage's); latency percentiles are the slowest task's.
    pub fn add(&mut self, other: &EnrichReport) {
        self.rows += other.rows;
        self.distinct_keys += other.distinct_keys;
        self.cache_hits += other.cache_hits;
        self.calls += other.calls;
        self.retries += other.retries;
        self.failed_keys += other.failed_keys;
        self.failed_rows += other.failed_rows;
        self.null_keys += other.null_keys;
        for (cause, n) in &other.failures_by_cause {
            *self.failures_by_cause.entry(cause.clone()).or_default() += n;
        }
        self.latency_ms_p50 = self.latency_ms_p50.max(other.latency_ms_p50);
        self.latency_ms_p95 = self.latency_ms_p95.max(other.latency_ms_p95);
        self.latency_ms_max = self.latency_ms_max.max(other.latency_ms_max);
        self.requests_per_second += other.requests_per_second;
        self.calling_s = self.calling_s.max(other.calling_s);
        self.max_in_flight += other.max_in_flight;
        self.final_concurrency += other.final_concurrency;
        self.retry_budget_exhausted += other.retry_budget_exhausted;
        self.waited_s = self.waited_s.zip(&other.waited_s, |a, b| a + b);
        self.waited_wall_s = self.waited_wall_s.zip(&other.waited_wall_s, f64::max);
        self.paused_all += other.paused_all;
        self.keys_forgotten += other.keys_forgotten;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two waits that overlap count once in the wall time and twice in request-seconds;
    /// time with nobody waiting counts in neither.
    #[test]
    fn overlapping_waits_count_once_in_wall_time() {
        let stats = EnrichStats::new("t");
        let start = Instant::now();
        let a = stats.waiting(Wait::RetryAfter);
        std::thread::sleep(Duration::from_millis(20));
        let b = stats.waiting(Wait::RetryAfter);
        std::thread::sleep(Duration::from_millis(20));
        drop(a);
        std::thread::sleep(Duration::from_millis(20));
        drop(b);
        let span = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(30));
        let r = stats.report(1);
        let (wall, req) = (r.waited_wall_s.retry_after, r.waited_s.retry_after);
        // a waited 40 ms, b 40 ms, 20 of them side by side: 60 ms of wall time.
        assert!(
            (0.059..=span + 1e-3).contains(&wall),
            "wall {wall}, span {span}"
        );
        assert!(req >= 0.079, "request-seconds {req}");
        assert!(
            req - wall >= 0.019,
            "the overlap counted twice: {req} vs {wall}"
        );
        assert_eq!(r.waited_wall_s.concurrency, 0.0);
        assert_eq!(r.waited_s.concurrency, 0.0);
    }

    /// A wait still under way counts up to now; tasks of a cluster stage add their
    /// request-seconds but not their wall time (they ran side by side).
    #[test]
    fn open_waits_count_and_tasks_combine() {
        let stats = EnrichStats::new("t");
        let _open = stats.waiting(Wait::RateLimit);
        std::thread::sleep(Duration::from_millis(15));
        let mut r = stats.report(1);
        assert!(r.waited_wall_s.rate_limit >= 0.014, "{:?}", r.waited_wall_s);
        let other = r.clone();
        r.add(&other);
        assert_eq!(r.waited_s.rate_limit, 2.0 * other.waited_s.rate_limit);
        assert_eq!(r.waited_wall_s.rate_limit, other.waited_wall_s.rate_limit);
    }
}
