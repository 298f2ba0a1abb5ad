//! Flow control for API calls: a concurrency limiter (fixed or adaptive), a token-bucket
//! pacer that holds every call only while the API says everyone must wait, a retry budget
//! and backoff with full jitter.
//!
//! A `429`/`503` with `Retry-After` delays the request that got it (its key is never tried
//! earlier) and, with adaptive concurrency, halves the limit: the stage slows in proportion
//! and keeps calling for other keys. The whole stage pauses for the `Retry-After` only when
//! the API is clearly telling everyone to stop: more than half of the last
//! [`CROWD_WINDOW`] answers were 429/503/timeouts (see [`Pacer::observe`]). One sporadic 429
//! costs one key one second, not the stage one second.
//!
//! Adaptive concurrency is AIMD with slow start, the TCP Reno scheme: the limit starts at 4
//! and grows by one per success (doubling per round trip) until the first congestion signal,
//! then by one per round trip; a 429, a 503 or a timeout halves it (at most once per round
//! trip, so one burst of 429s counts once). APIs signal overload in exactly these binary ways,
//! which AIMD reads directly; a gradient (latency-based) limiter would react to the jitter of
//! a loopback or LAN round trip before the API is anywhere near its limit. While latency stays
//! within twice the best seen, the limit grows; above that it holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::stats::{EnrichStats, Wait};
use tokio::sync::Notify;

/// Caps requests in flight.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<LimitState>,
    notify: Notify,
    adaptive: bool,
    max: usize,
}

#[derive(Debug)]
struct LimitState {
    limit: f64,
    in_flight: usize,
    slow_start: bool,
    /// The lowest recent latency: it follows higher latencies slowly (1/[`BEST_DRIFT`] of
    /// the gap per answer), so one lucky fast answer early on does not hold the limit
    /// down for the rest of the run.
    best_latency: Option<Duration>,
    last_decrease: Option<Instant>,
}

/// How slowly the best latency follows higher latencies (answers per e-fold).
const BEST_DRIFT: u32 = 256;

/// Answers the pacer remembers to tell sporadic 429s from an API telling everyone to stop.
pub const CROWD_WINDOW: usize = 20;

/// A slot held while a request is in flight; frees it when dropped.
pub struct Permit<'a> {
    limiter: &'a Limiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.limiter.state.lock() {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        self.limiter.notify.notify_one();
    }
}

/// How a request ended, as flow control sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An answer that says nothing about load (2xx, 404...).
    Ok,
    /// The API is overloaded (429, 503, timeout, connection refused or reset).
    Congested,
}

impl Limiter {
    /// A fixed limit of `n`.
    pub fn fixed(n: usize) -> Limiter {
        Limiter::new(n.max(1) as f64, false, n.max(1))
    }

    /// An adaptive limit between 1 and `max`.
    pub fn adaptive(max: usize) -> Limiter {
        Limiter::new(4f64.min(max.max(1) as f64), true, max.max(1))
    }

    fn new(limit: f64, adaptive: bool, max: usize) -> Limiter {
        Limiter {
            state: Mutex::new(LimitState {
                limit,
                in_flight: 0,
                slow_start: true,
                best_latency: None,
                last_decrease: None,
            }),
            notify: Notify::new(),
            adaptive,
            max,
        }
    }

    /// Waits for a free slot.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Ok(mut s) = self.state.lock() {
                if (s.in_flight as f64) < s.limit.floor().max(1.0) {
                    s.in_flight += 1;
                    return Permit { limiter: self };
                }
            }
            notified.await;
        }
    }

    /// Feeds the outcome of a request to the adaptive limit.
    pub fn record(&self, signal: Signal, latency: Duration) {
        if !self.adaptive {
            return;
        }
        let grew = {
            let Ok(mut s) = self.state.lock() else { return };
            let best = *s.best_latency.get_or_insert(latency);
            s.best_latency = Some(if latency < best {
                latency
            } else {
                best + (latency - best) / BEST_DRIFT
            });
            let rtt = s
                .best_latency
                .unwrap_or(latency)
                .max(Duration::from_millis(1));
            match signal {
                Signal::Congested => {
                    let recent = s.last_decrease.is_some_and(|t| t.elapsed() < rtt);
                    if !recent {
                        s.limit = (s.limit / 2.0).max(1.0);
                        s.slow_start = false;
                        s.last_decrease = Some(Instant::now());
                    }
                    false
                }
                Signal::Ok if latency <= rtt * 2 => {
                    let before = s.limit.floor();
                    let step = if s.slow_start { 1.0 } else { 1.0 / s.limit };
                    s.limit = (s.limit + step).min(self.max as f64);
                    s.limit.floor() > before
                }
                Signal::Ok => false,
            }
        };
        if grew {
            self.notify.notify_one();
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.limit.floor() as usize)
            .unwrap_or(1)
    }
}

/// Spaces requests to a rate (token bucket) and holds them while the API asked to wait.
#[derive(Debug)]
pub struct Pacer {
    /// Seconds between requests, and the bucket size.
    rate: Option<(Duration, u32)>,
    state: Mutex<PaceState>,
}

#[derive(Debug)]
struct PaceState {
    /// Theoretical arrival time of the next request (GCRA form of the token bucket).
    tat: Instant,
    pause_until: Option<Instant>,
    /// The last [`CROWD_WINDOW`] answers: true for "slow down" (429, 503, timeout).
    recent: std::collections::VecDeque<bool>,
}

impl Pacer {
    /// `per_second` requests per second at most with `burst` at once; `None`: no rate.
    pub fn new(per_second: Option<f64>, burst: u32) -> Pacer {
        Pacer {
            rate: per_second.map(|r| (Duration::from_secs_f64(1.0 / r), burst.max(1))),
            state: Mutex::new(PaceState {
                tat: Instant::now(),
                pause_until: None,
                recent: std::collections::VecDeque::with_capacity(CROWD_WINDOW),
            }),
        }
    }

    /// Waits until a request may go, counting the waits in `stats` as a pause of the whole
    /// stage or the rate limit.
    pub async fn acquire(&self, stats: &EnrichStats) {
        loop {
            let wait = {
                let Ok(mut s) = self.state.lock() else {
                    return;
                };
                let now = Instant::now();
                match s.pause_until {
                    Some(p) if p > now => Some((p - now, true)),
                    _ => match self.rate {
                        None => None,
                        Some((interval, burst)) => {
                            let tat = s.tat.max(now);
                            let allowed = tat.checked_sub(interval * (burst - 1)).unwrap_or(now);
                            if allowed <= now {
                                s.tat = tat + interval;
                                None
                            } else {
                                Some((allowed - now, false))
                            }
                        }
                    },
                }
            };
            match wait {
                None => return,
                Some((d, paused)) => {
                    let _waiting = stats.waiting(if paused {
                        Wait::Paused
                    } else {
                        Wait::RateLimit
                    });
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    /// Remembers one answer (`slow_down`: a 429, 503 or timeout); true when the API is
    /// telling everyone to stop: more than half of the last [`CROWD_WINDOW`] answers (with
    /// at least half a window seen) said slow down. Only then does a `Retry-After` pause the
    /// whole stage; otherwise it delays the one request that got it.
    pub fn observe(&self, slow_down: bool) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.recent.len() == CROWD_WINDOW {
            s.recent.pop_front();
        }
        s.recent.push_back(slow_down);
        let n = s.recent.iter().filter(|b| **b).count();
        s.recent.len() * 2 >= CROWD_WINDOW && n * 2 > s.recent.len()
    }

    /// Holds every request until `until` (a `Retry-After` from the API).
    pub fn pause_until(&self, until: Instant) {
        if let Ok(mut s) = self.state.lock() {
            if s.pause_until.is_none_or(|p| p < until) {
                s.pause_until = Some(until);
            }
        }
    }
}

/// Retries allowed: at most `ratio` of first attempts, plus a floor of 10.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    first: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    /// A budget of `ratio` retries per first attempt.
    pub fn new(ratio: f64) -> RetryBudget {
        RetryBudget {
            ratio: ratio.max(0.0),
            first: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// Counts a first attempt.
    pub fn first_attempt(&self) {
        self.first.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, if any is left.
    pub fn try_retry(&self) -> bool {
        let allowed = 10 + (self.first.load(Ordering::Relaxed) as f64 * self.ratio) as u64;
        self.retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r < allowed).then_some(r + 1)
            })
            .is_ok()
    }
}

/// Exponential backoff with full jitter: a random wait in `[0, min(max, base * 2^retry))`.
pub fn backoff(retry: u32, base: Duration, max: Duration) -> Duration {
    let cap = base
        .saturating_mul(1u32.checked_shl(retry.min(30)).unwrap_or(u32::MAX))
        .min(max);
    cap.mul_f64(rand::random::<f64>())
}

/// Parses a `Retry-After` value: seconds, or an HTTP date. Capped at 10 minutes.
pub fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let d = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(d.min(Duration::from_secs(600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aimd_halves_on_congestion_and_grows_back() {
        let l = Limiter::adaptive(64);
        assert_eq!(l.limit(), 4);
        for _ in 0..10 {
            l.record(Signal::Ok, Duration::from_millis(20));
        }
        assert_eq!(l.limit(), 14, "slow start adds one per success");
        l.record(Signal::Congested, Duration::from_millis(20));
        assert_eq!(l.limit(), 7);
        l.record(Signal::Congested, Duration::from_millis(20));
        assert_eq!(l.limit(), 7, "one decrease per round trip");
        for _ in 0..8 {
            l.record(Signal::Ok, Duration::from_millis(20));
        }
        assert_eq!(l.limit(), 8, "then one per round trip");
        for _ in 0..50 {
            l.record(Signal::Ok, Duration::from_millis(200));
        }
        assert_eq!(l.limit(), 8, "holds while latency is high");
    }

    #[test]
    fn a_fast_start_does_not_hold_the_limit_down_for_good() {
        let l = Limiter::adaptive(64);
        // One very fast answer, then the API's usual 20 ms: growth holds at first...
        l.record(Signal::Ok, Duration::from_micros(100));
        l.record(Signal::Congested, Duration::from_millis(20));
        let held = l.limit();
        for _ in 0..50 {
            l.record(Signal::Ok, Duration::from_millis(20));
        }
        assert_eq!(l.limit(), held, "20 ms is far above the best seen");
        // ...and resumes once the best latency has followed the usual one.
        for _ in 0..2000 {
            l.record(Signal::Ok, Duration::from_millis(20));
        }
        assert!(l.limit() > held + 5, "{} vs {held}", l.limit());
    }

    #[test]
    fn only_a_crowd_of_429s_stops_everyone() {
        let p = Pacer::new(None, 1);
        // 1 in 20 answers is a 429: never a crowd.
        for i in 0..200 {
            assert!(!p.observe(i % 20 == 7), "answer {i}");
        }
        // Most answers are 429s: a crowd, once half a window agrees.
        let p = Pacer::new(None, 1);
        let crowd: Vec<bool> = (0..20).map(|_| p.observe(true)).collect();
        assert!(!crowd[..9].iter().any(|c| *c), "{crowd:?}");
        assert!(crowd[9..].iter().all(|c| *c), "{crowd:?}");
        // The API recovers: the crowd disperses as good answers come back.
        let after: Vec<bool> = (0..20).map(|_| p.observe(false)).collect();
        assert!(!after[10], "{after:?}");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(retry_after("2"), Some(Duration::from_secs(2)));
        let soon = std::time::SystemTime::now() + Duration::from_secs(30);
        let d = retry_after(&httpdate::fmt_http_date(soon)).expect("date");
        assert!(
            d > Duration::from_secs(27) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn budget_and_backoff() {
        let b = RetryBudget::new(0.2);
        for _ in 0..100 {
            b.first_attempt();
        }
        let granted = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(granted, 30);
        for retry in 0..10 {
            let d = backoff(retry, Duration::from_millis(100), Duration::from_secs(1));
            assert!(d < Duration::from_secs(1));
        }
    }
}
