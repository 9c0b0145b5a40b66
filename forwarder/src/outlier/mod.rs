//! Passive outlier detection: what each endpoint's recent requests say of
//! it, kept in atomics beside the endpoint so that recording an outcome or
//! skipping an ejected endpoint takes no lock.
//!
//! The health of an endpoint outlives config updates: a cluster keeps one
//! `EndpointHealth` per address ([`HealthRegistry`]), and each new
//! endpoint set takes the existing one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::config::OutlierDetection;

mod interval;

pub use interval::evaluate;

/// Milliseconds on the process's monotonic clock (tokio's, so that tests
/// with paused time move it). 0 means "never".
pub fn now_ms() -> u64 {
    static START: OnceLock<tokio::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(tokio::time::Instant::now);
    // +1: a time taken at the very start is not "never".
    tokio::time::Instant::now()
        .duration_since(start)
        .as_millis() as u64
        + 1
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[derive(Default)]
pub struct EndpointHealth {
    /// Per detector: 5xx, gateway errors, local failures in a row.
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Outcomes since the last interval's evaluation (success rate and
    /// failure percentage).
    window_total: AtomicU32,
    window_failed: AtomicU32,
    /// Failing its active health checks (MeshHealthCheck).
    check_failing: AtomicBool,
    /// Out of rotation until then.
    ejected_until: AtomicU64,
    /// Ejections in a row: each one lasts longer.
    times_ejected: AtomicU32,
    /// When it last answered.
    last_response: AtomicU64,
    in_flight: AtomicU32,
}

/// Why an endpoint was taken out, for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocal,
    SuccessRate,
    FailurePercentage,
    Stalled,
}

/// What one try of an endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Response(u16),
    /// A connection was made (a TCP outbound's whole outcome).
    Connected,
    /// No connection, a reset or no answer in time.
    LocalFailure,
}

/// Counts one more in a row; true when that reaches `threshold`.
fn bump(counter: &AtomicU32, threshold: Option<u32>) -> bool {
    let n = counter.fetch_add(1, Relaxed) + 1;
    threshold.is_some_and(|t| t > 0 && n >= t)
}

/// Ends a run, writing only when there was one (a read keeps the cache
/// line shared under load).
fn reset(counter: &AtomicU32) {
    if counter.load(Relaxed) != 0 {
        counter.store(0, Relaxed);
    }
}

impl EndpointHealth {
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Relaxed) > now
    }

    /// Whether picks may choose it: not ejected, not failing its checks.
    pub fn in_rotation(&self, now: u64) -> bool {
        !self.is_ejected(now) && !self.check_failing.load(Relaxed)
    }

    /// What the active health checks say of it.
    pub fn set_check_failing(&self, failing: bool) {
        self.check_failing.store(failing, Relaxed);
    }

    pub fn check_failing(&self) -> bool {
        self.check_failing.load(Relaxed)
    }

    pub fn last_response(&self) -> u64 {
        self.last_response.load(Relaxed)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Counts one request as waiting on this endpoint until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// It sent a response, of whatever status: it is not frozen. Written
    /// at most once a millisecond: under load every worker answers here,
    /// and a read keeps the cache line shared where a write would not.
    pub fn answered(&self, now: u64) {
        if self.last_response.load(Relaxed) < now {
            self.last_response.store(now, Relaxed);
        }
    }

    /// Records what a try came to. Returns the detector this outcome trips
    /// (the caller then decides whether the ejection is allowed). Unless
    /// local failures are split off, they count as a 503 would and a
    /// connection made as a 200, as Envoy counts them.
    pub fn record(&self, cfg: &OutlierDetection, outcome: Outcome, now: u64) -> Option<Ejection> {
        let status = match (outcome, cfg.split_local) {
            (Outcome::Response(s), _) => {
                self.answered(now);
                s
            }
            (Outcome::Connected, true) => {
                reset(&self.consecutive_local);
                return None;
            }
            (Outcome::LocalFailure, true) => {
                let tripped = bump(&self.consecutive_local, cfg.consecutive_local);
                return tripped.then_some(Ejection::ConsecutiveLocal);
            }
            (Outcome::Connected, false) => 200,
            (Outcome::LocalFailure, false) => 503,
        };
        if !cfg.enabled {
            return None;
        }
        // Counted only for the interval detectors: a write per request
        // costs a cache line that every worker shares.
        let windowed = cfg.success_rate.is_some() || cfg.failure_percentage.is_some();
        if windowed {
            self.window_total.fetch_add(1, Relaxed);
        }
        if status < 500 {
            reset(&self.consecutive_5xx);
            reset(&self.consecutive_gateway);
            return None;
        }
        if windowed {
            self.window_failed.fetch_add(1, Relaxed);
        }
        let five = bump(&self.consecutive_5xx, cfg.consecutive_5xx);
        let gateway = if (502..=504).contains(&status) {
            bump(&self.consecutive_gateway, cfg.consecutive_gateway)
        } else {
            reset(&self.consecutive_gateway);
            false
        };
        if five {
            Some(Ejection::Consecutive5xx)
        } else {
            gateway.then_some(Ejection::ConsecutiveGateway)
        }
    }

    /// The interval's outcomes (total, failed), counting starts again.
    fn take_window(&self) -> (u32, u32) {
        (
            self.window_total.swap(0, Relaxed),
            self.window_failed.swap(0, Relaxed),
        )
    }

    /// Whether a request sent at `sent_at` shows this endpoint frozen: it
    /// has waited `stalled_after`, the endpoint has answered nothing for
    /// that long (answers to requests sent before this one count: a
    /// process that froze still finishes what it was writing), at least
    /// one more request waits on it, and another endpoint of the service
    /// answered in that time (so the service itself is not just slow).
    pub fn stalled(
        &self,
        cfg: &OutlierDetection,
        sent_at: u64,
        now: u64,
        peers_answered_at: u64,
    ) -> bool {
        let Some(after) = cfg.stalled_after.map(ms) else {
            return false;
        };
        now.saturating_sub(sent_at) >= after
            && now.saturating_sub(self.last_response()) >= after
            && self.in_flight() >= 2
            && peers_answered_at > now.saturating_sub(after)
    }

    /// Whether a request sent at `sent_at` should stop waiting on this
    /// endpoint because it was taken out meanwhile: it has not answered
    /// since, or not for `stalled_after`.
    pub fn abandoned(&self, cfg: &OutlierDetection, sent_at: u64, now: u64) -> bool {
        let silent = now.saturating_sub(self.last_response());
        let waited = now.saturating_sub(sent_at);
        let limit = cfg.stalled_after.map_or(waited, |d| waited.min(ms(d)));
        self.is_ejected(now) && silent >= limit
    }

    /// Takes the endpoint out: base time × ejections in a row, capped.
    fn eject(&self, cfg: &OutlierDetection, now: u64) -> Duration {
        let until = self.ejected_until.load(Relaxed);
        // Healthy for a whole base period since the last ejection ended:
        // this one starts the count again.
        if until + ms(cfg.base_ejection_time) < now {
            self.times_ejected.store(0, Relaxed);
        }
        let times = self.times_ejected.fetch_add(1, Relaxed) + 1;
        let out = cfg
            .base_ejection_time
            .saturating_mul(times)
            .min(cfg.max_ejection_time);
        self.ejected_until.store(now + ms(out), Relaxed);
        for c in [
            &self.consecutive_5xx,
            &self.consecutive_gateway,
            &self.consecutive_local,
        ] {
            c.store(0, Relaxed);
        }
        out
    }
}

/// A request waiting on an endpoint.
pub struct InFlight(Arc<EndpointHealth>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Ejects `endpoint` unless that would take out more than the allowed
/// share of `all` (counting those out already). Returns how long it is out.
pub fn try_eject<'a>(
    cfg: &OutlierDetection,
    endpoint: &EndpointHealth,
    all: impl Iterator<Item = &'a EndpointHealth>,
    now: u64,
) -> Option<Duration> {
    if !cfg.enabled || endpoint.is_ejected(now) {
        return None;
    }
    let (mut total, mut out) = (0usize, 0usize);
    for e in all {
        total += 1;
        if e.is_ejected(now) {
            out += 1;
        }
    }
    let allowed = (total * cfg.max_ejection_percent as usize / 100).max(1);
    (out < allowed).then(|| endpoint.eject(cfg, now))
}

/// One `EndpointHealth` per address of a cluster, kept across configs.
#[derive(Default)]
pub struct HealthRegistry {
    by_addr: Mutex<HashMap<SocketAddr, Arc<EndpointHealth>>>,
    /// When any endpoint of the cluster last answered.
    last_response: AtomicU64,
    /// When success rate and failure percentage are next computed.
    next_evaluation: AtomicU64,
}

impl HealthRegistry {
    /// The health of `addr`, new or kept. Called while a config is built,
    /// never per request. Entries no endpoint set holds any more go.
    pub fn of(&self, addr: SocketAddr) -> Arc<EndpointHealth> {
        let mut map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&addr) {
            map.retain(|_, h| Arc::strong_count(h) > 1);
        }
        map.entry(addr).or_default().clone()
    }

    pub fn answered(&self, now: u64) {
        if self.last_response.load(Relaxed) < now {
            self.last_response.fetch_max(now, Relaxed);
        }
    }

    pub fn last_response(&self) -> u64 {
        self.last_response.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierDetection {
        OutlierDetection::default()
    }

    #[test]
    fn five_failures_in_a_row_eject_and_a_success_resets_the_count() {
        let h = EndpointHealth::default();
        let fail = || h.record(&cfg(), Outcome::Response(503), 5);
        for _ in 0..4 {
            assert_eq!(fail(), None);
        }
        h.record(&cfg(), Outcome::Response(200), 10);
        for _ in 0..4 {
            assert_eq!(fail(), None);
        }
        assert_eq!(fail(), Some(Ejection::ConsecutiveGateway));
        let others = [EndpointHealth::default(), EndpointHealth::default()];
        let all = || std::iter::once(&h).chain(others.iter());
        assert_eq!(
            try_eject(&cfg(), &h, all(), 100),
            Some(Duration::from_secs(30))
        );
        assert!(h.is_ejected(100 + 29_999));
        assert!(!h.is_ejected(100 + 30_000));
    }

    #[test]
    fn ejections_in_a_row_last_longer_up_to_the_cap() {
        let h = EndpointHealth::default();
        let mut now = 1;
        let mut outs = Vec::new();
        for _ in 0..12 {
            let out = h.eject(&cfg(), now);
            outs.push(out.as_secs());
            now += ms(out) + 1; // back, and failing again at once
        }
        assert_eq!(&outs[..4], &[30, 60, 90, 120]);
        assert_eq!(outs[11], 300);
        // Healthy for more than a base period: back to the base time.
        now += 31_000;
        assert_eq!(h.eject(&cfg(), now).as_secs(), 30);
    }

    #[test]
    fn at_most_the_allowed_share_is_out_but_always_one() {
        let set: Vec<EndpointHealth> = (0..3).map(|_| EndpointHealth::default()).collect();
        assert!(try_eject(&cfg(), &set[0], set.iter(), 5).is_some());
        assert!(try_eject(&cfg(), &set[1], set.iter(), 5).is_none());
        let twenty: Vec<EndpointHealth> = (0..20).map(|_| EndpointHealth::default()).collect();
        assert!(try_eject(&cfg(), &twenty[0], twenty.iter(), 5).is_some());
        assert!(try_eject(&cfg(), &twenty[1], twenty.iter(), 5).is_some());
        assert!(try_eject(&cfg(), &twenty[2], twenty.iter(), 5).is_none());
    }

    #[test]
    fn stalled_needs_silence_a_queue_and_peers_that_answer() {
        let h = Arc::new(EndpointHealth::default());
        let _a = h.start_request();
        let (sent, now) = (1_000, 2_100);
        // Alone in flight: a long poll, not a freeze.
        assert!(!h.stalled(&cfg(), sent, now, 2_000));
        let _b = h.start_request();
        assert!(h.stalled(&cfg(), sent, now, 2_000));
        // Peers silent too: the service is slow, not this endpoint.
        assert!(!h.stalled(&cfg(), sent, now, 900));
        // Not long enough.
        assert!(!h.stalled(&cfg(), sent, 1_500, 1_400));
        // It answered a moment ago (an earlier request).
        h.answered(1_200);
        assert!(!h.stalled(&cfg(), sent, now, 2_000));
        // ...and nothing for a second since: frozen after all.
        assert!(h.stalled(&cfg(), sent, 2_300, 2_250));
    }

    #[test]
    fn requests_waiting_on_an_ejected_endpoint_give_up_once_it_is_silent() {
        let h = EndpointHealth::default();
        h.answered(1_500);
        let others = [EndpointHealth::default()];
        assert!(try_eject(&cfg(), &h, std::iter::once(&h).chain(others.iter()), 1_600).is_some());
        // Sent before its last answer, silent for less than a second: wait.
        assert!(!h.abandoned(&cfg(), 1_000, 2_000));
        // Silent for a second: give up.
        assert!(h.abandoned(&cfg(), 1_000, 2_500));
        // Sent after its last answer: give up at once.
        assert!(h.abandoned(&cfg(), 1_700, 1_800));
    }

    #[test]
    fn the_registry_keeps_health_across_sets_and_drops_unused_entries() {
        let r = HealthRegistry::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let ha = r.of(a);
        assert!(Arc::ptr_eq(&ha, &r.of(a)));
        drop(ha);
        let _hb = r.of(b);
        assert_eq!(r.by_addr.lock().unwrap().len(), 1);
    }
}
