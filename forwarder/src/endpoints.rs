//! The endpoints of one outbound service and the order they are picked in.
//!
//! A set is immutable: a config update builds a new one and swaps it in.
//! Weighted round-robin is precomputed into a schedule (smooth WRR, as
//! nginx does it), so a pick is one atomic increment and an index.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use http::uri::Authority;

use crate::config::EndpointConfig;

/// Where requests go, with its URI authority rendered once per config
/// rather than once per request.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub authority: Authority,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Endpoint {
        let authority = Authority::try_from(addr.to_string())
            .expect("an IP address and port is always a valid URI authority");
        Endpoint { addr, authority }
    }
}

/// Longest schedule kept; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 4096;

/// At most this many endpoints of one priority are tried for one
/// connection or request before the next priority's.
const ATTEMPTS_PER_PRIORITY: usize = 3;

/// The endpoints of one priority, in weighted round-robin order.
struct Group {
    endpoints: Vec<Endpoint>,
    schedule: Vec<u32>,
    cursor: AtomicUsize,
}

/// A service's endpoints by priority (locality): picks come from the
/// lowest priority that has endpoints; the next priorities are the
/// fallback when those fail to connect.
pub struct EndpointSet {
    groups: Vec<Group>,
    len: usize,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Group {
    fn new(endpoints: &[&EndpointConfig], start: usize) -> Group {
        let mut weights: Vec<u64> = endpoints
            .iter()
            .map(|e| u64::from(e.weight.max(1)))
            .collect();
        let g = weights.iter().copied().fold(0, gcd).max(1);
        weights.iter_mut().for_each(|w| *w /= g);
        let total: u64 = weights.iter().sum();
        if total > MAX_SCHEDULE {
            weights
                .iter_mut()
                .for_each(|w| *w = (*w * MAX_SCHEDULE / total).max(1));
        }
        Group {
            endpoints: endpoints.iter().map(|e| Endpoint::new(e.addr)).collect(),
            schedule: smooth_wrr(&weights),
            cursor: AtomicUsize::new(start),
        }
    }

    fn pick(&self) -> Option<&Endpoint> {
        if self.schedule.is_empty() {
            return None;
        }
        let i = self.cursor.fetch_add(1, Relaxed) % self.schedule.len();
        Some(&self.endpoints[self.schedule[i] as usize])
    }

    fn attempts(&self) -> usize {
        self.endpoints.len().min(ATTEMPTS_PER_PRIORITY)
    }
}

impl EndpointSet {
    pub fn new(endpoints: &[EndpointConfig]) -> EndpointSet {
        // Start each new set at a different place, so that frequent config
        // updates do not keep sending the first request to the first endpoint.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as usize);
        let mut priorities: Vec<u32> = endpoints.iter().map(|e| e.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let groups = priorities
            .into_iter()
            .map(|p| {
                let members: Vec<&EndpointConfig> =
                    endpoints.iter().filter(|e| e.priority == p).collect();
                Group::new(&members, start)
            })
            .collect();
        EndpointSet {
            groups,
            len: endpoints.len(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next endpoint of the first priority, in weighted round-robin order.
    pub fn pick(&self) -> Option<&Endpoint> {
        self.groups.first().and_then(Group::pick)
    }

    /// How many endpoints one connection or request may try.
    pub fn attempts(&self) -> usize {
        self.groups.iter().map(Group::attempts).sum()
    }

    /// The endpoint for try number `attempt` (from 0): a few of the first
    /// priority, then a few of the next, and so on.
    pub fn pick_for(&self, mut attempt: usize) -> Option<&Endpoint> {
        for group in &self.groups {
            if attempt < group.attempts() {
                return group.pick();
            }
            attempt -= group.attempts();
        }
        None
    }
}

fn smooth_wrr(weights: &[u64]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|w| *w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16, weight: u32) -> EndpointConfig {
        EndpointConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
            priority: 0,
        }
    }

    #[test]
    fn the_first_priority_takes_every_pick_and_the_next_ones_are_fallbacks() {
        let remote = |port| EndpointConfig {
            priority: 1,
            ..ep(port, 5)
        };
        let set = EndpointSet::new(&[remote(9), ep(1, 1), ep(2, 1)]);
        assert!((0..50).all(|_| set.pick().unwrap().addr.port() != 9));
        assert_eq!(set.attempts(), 3);
        let tries: Vec<u16> = (0..3)
            .map(|i| set.pick_for(i).unwrap().addr.port())
            .collect();
        assert!(
            tries[..2].contains(&1) && tries[..2].contains(&2),
            "{tries:?}"
        );
        assert_eq!(tries[2], 9);
        assert!(set.pick_for(3).is_none());
        // No local endpoint left: the remote one takes everything.
        let only_remote = EndpointSet::new(&[remote(9)]);
        assert_eq!(only_remote.pick().unwrap().addr.port(), 9);
    }

    #[test]
    fn equal_weights_alternate() {
        let set = EndpointSet::new(&[ep(1, 1), ep(2, 1), ep(3, 1)]);
        let picks: Vec<u16> = (0..6).map(|_| set.pick().unwrap().addr.port()).collect();
        for p in 1..=3 {
            assert_eq!(picks.iter().filter(|x| **x == p).count(), 2, "{picks:?}");
        }
        assert_ne!(picks[0], picks[1]);
    }

    #[test]
    fn weights_are_respected_and_interleaved() {
        let set = EndpointSet::new(&[ep(1, 300), ep(2, 100)]);
        let picks: Vec<u16> = (0..400).map(|_| set.pick().unwrap().addr.port()).collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 300);
        // Smooth: never two picks of the light endpoint in a row.
        assert!(picks.windows(2).all(|w| !(w[0] == 2 && w[1] == 2)));
    }

    #[test]
    fn empty_set_picks_nothing() {
        assert!(EndpointSet::new(&[]).pick().is_none());
    }
}
