//! Flow control for API calls: a concurrency limiter (fixed or adaptive), a token-bucket
//! pacer that also holds every call while the API asked to wait (`Retry-After`), a retry
//! budget and backoff with full jitter.
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
    best_latency: Option<Duration>,
    last_decrease: Option<Instant>,
}

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
            if latency < best {
                s.best_latency = Some(latency);
            }
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
}

impl Pacer {
    /// `per_second` requests per second at most with `burst` at once; `None`: no rate.
    pub fn new(per_second: Option<f64>, burst: u32) -> Pacer {
        Pacer {
            rate: per_second.map(|r| (Duration::from_secs_f64(1.0 / r), burst.max(1))),
            state: Mutex::new(PaceState {
                tat: Instant::now(),
                pause_until: None,
            }),
        }
    }

    /// Waits until a request may go.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let Ok(mut s) = self.state.lock() else { return };
                let now = Instant::now();
                match s.pause_until {
                    Some(p) if p > now => Some(p - now),
                    _ => match self.rate {
                        None => None,
                        Some((interval, burst)) => {
                            let tat = s.tat.max(now);
                            let allowed = tat.checked_sub(interval * (burst - 1)).unwrap_or(now);
                            if allowed <= now {
                                s.tat = tat + interval;
                                None
                            } else {
                                Some(allowed - now)
                            }
                        }
                    },
                }
            };
            match wait {
                None => return,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
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
