//! The endpoints of one outbound service and the order they are picked in.
//!
//! A set is immutable: a config update builds a new one and swaps it in.
//! Weighted round-robin is precomputed into a schedule (smooth WRR, as
//! nginx does it), so a pick is one atomic increment and an index. Picks
//! pass over endpoints that outlier detection took out and, for a retry,
//! those the request has tried already.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use http::uri::Authority;

use crate::config::{EndpointConfig, HashPolicy, LoadBalancer};
use crate::outlier::{EndpointHealth, HealthRegistry};

mod balancer;

use balancer::HashTable;
pub use balancer::{PickKey, fnv, random};

/// Where requests go, with its URI authority rendered once per config
/// rather than once per request.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub authority: Authority,
    pub health: Arc<EndpointHealth>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, health: Arc<EndpointHealth>) -> Endpoint {
        let authority = Authority::try_from(addr.to_string())
            .expect("an IP address and port is always a valid URI authority");
        Endpoint {
            addr,
            authority,
            health,
        }
    }
}

/// Longest schedule kept; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 4096;

/// The endpoints of one priority, in weighted round-robin order, and
/// their consistent-hash table when the balancer hashes.
struct Group {
    endpoints: Vec<Endpoint>,
    schedule: Vec<u32>,
    cursor: AtomicUsize,
    table: Option<HashTable>,
}

/// How a group picks (MeshLoadBalancingStrategy `loadBalancer.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    RoundRobin,
    Random,
    LeastRequest(u32),
    Hash,
}

/// A service's endpoints by priority (locality): picks come from the
/// lowest priority that has an endpoint in rotation; the next priorities
/// take over when all of its endpoints are out or were tried.
pub struct EndpointSet {
    groups: Vec<Group>,
    len: usize,
    strategy: Strategy,
    hash_policies: Vec<HashPolicy>,
    /// Below this share of endpoints in rotation (percent), picks ignore
    /// health (Envoy's panic mode). `None`: only when none is left.
    panic_threshold: Option<f64>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Group {
    fn new(
        endpoints: &[&EndpointConfig],
        start: usize,
        health: &HealthRegistry,
        lb: &LoadBalancer,
    ) -> Group {
        let mut weights: Vec<u64> = endpoints
            .iter()
            .map(|e| u64::from(e.weight.max(1)))
            .collect();
        let ids: Vec<u64> = endpoints
            .iter()
            .map(|e| balancer::fnv(e.addr.to_string().as_bytes()))
            .collect();
        let table = HashTable::build(lb, &ids, &weights);
        let g = weights.iter().copied().fold(0, gcd).max(1);
        weights.iter_mut().for_each(|w| *w /= g);
        let total: u64 = weights.iter().sum();
        if total > MAX_SCHEDULE {
            weights
                .iter_mut()
                .for_each(|w| *w = (*w * MAX_SCHEDULE / total).max(1));
        }
        Group {
            endpoints: endpoints
                .iter()
                .map(|e| Endpoint::new(e.addr, health.of(e.addr)))
                .collect(),
            schedule: smooth_wrr(&weights),
            cursor: AtomicUsize::new(start),
            table,
        }
    }

    /// An endpoint `usable` accepts, the way `strategy` picks.
    fn choose(
        &self,
        strategy: Strategy,
        key: &PickKey,
        usable: impl Fn(&Endpoint) -> bool,
    ) -> Option<&Endpoint> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let scan_from = |start: usize| (0..n).map(move |k| &self.endpoints[(start + k) % n]);
        match (strategy, key.0, &self.table) {
            (Strategy::Hash, Some(k), Some(table)) => table
                .walk(k)
                .map(|i| &self.endpoints[i])
                .find(|e| usable(e)),
            (Strategy::RoundRobin, ..) => self.pick(usable),
            (Strategy::LeastRequest(choices), ..) => {
                let mut best: Option<&Endpoint> = None;
                for _ in 0..choices.max(1) {
                    let e = &self.endpoints[balancer::random() as usize % n];
                    if usable(e) && best.is_none_or(|b| e.health.in_flight() < b.health.in_flight())
                    {
                        best = Some(e);
                    }
                }
                best.or_else(|| scan_from(balancer::random() as usize).find(|e| usable(e)))
            }
            // Random, and a hash balancer given no hash (Envoy picks at
            // random then).
            _ => scan_from(balancer::random() as usize).find(|e| usable(e)),
        }
    }

    /// The next endpoint in weighted order that `usable` accepts. The
    /// schedule is walked for a bounded number of steps, then the
    /// endpoints in turn, so that a pick costs little even when most are out.
    fn pick(&self, usable: impl Fn(&Endpoint) -> bool) -> Option<&Endpoint> {
        if self.schedule.is_empty() {
            return None;
        }
        let steps = self.schedule.len().min(2 * self.endpoints.len() + 2);
        for _ in 0..steps {
            let i = self.cursor.fetch_add(1, Relaxed) % self.schedule.len();
            let e = &self.endpoints[self.schedule[i] as usize];
            if usable(e) {
                return Some(e);
            }
        }
        self.endpoints.iter().find(|e| usable(e))
    }
}

impl EndpointSet {
    pub fn new(
        endpoints: &[EndpointConfig],
        health: &HealthRegistry,
        lb: &LoadBalancer,
        panic_threshold: Option<f64>,
    ) -> EndpointSet {
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
                Group::new(&members, start, health, lb)
            })
            .collect();
        let (strategy, hash_policies) = match lb {
            LoadBalancer::RoundRobin => (Strategy::RoundRobin, Vec::new()),
            LoadBalancer::Random => (Strategy::Random, Vec::new()),
            LoadBalancer::LeastRequest { choice_count } => {
                (Strategy::LeastRequest(*choice_count), Vec::new())
            }
            LoadBalancer::RingHash { hash, .. } | LoadBalancer::Maglev { hash, .. } => {
                (Strategy::Hash, hash.clone())
            }
        };
        EndpointSet {
            groups,
            len: endpoints.len(),
            strategy,
            hash_policies,
            panic_threshold,
        }
    }

    /// What a request is hashed by, when the balancer hashes.
    pub fn key_for(
        &self,
        headers: &http::HeaderMap,
        uri: &http::Uri,
        source: Option<std::net::IpAddr>,
    ) -> PickKey {
        if self.hash_policies.is_empty() {
            return PickKey::default();
        }
        balancer::request_key(&self.hash_policies, headers, uri, source)
    }

    /// Every endpoint, for the interval detectors.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.groups.iter().flat_map(|g| g.endpoints.iter())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every endpoint's health, for the share-ejected check.
    pub fn healths(&self) -> impl Iterator<Item = &EndpointHealth> {
        self.groups
            .iter()
            .flat_map(|g| g.endpoints.iter().map(|e| &*e.health))
    }

    /// The endpoint for the next try of a connection or request that has
    /// tried `tried` already: the first priority with an endpoint in
    /// rotation it has not tried. When every untried endpoint is out
    /// (outlier detection, health checks), or fewer than the panic
    /// threshold are in, one of them all the same (Envoy's panic mode):
    /// a guess beats a certain failure. `None` when all were tried.
    pub fn pick(&self, tried: &[SocketAddr], now: u64) -> Option<&Endpoint> {
        self.pick_for(&PickKey::default(), tried, now)
    }

    /// `pick`, for a request with hash `key`.
    pub fn pick_for(&self, key: &PickKey, tried: &[SocketAddr], now: u64) -> Option<&Endpoint> {
        let untried = |e: &Endpoint| !tried.contains(&e.addr);
        let panic = self.panic_threshold.is_some_and(|threshold| {
            let healthy = self
                .endpoints()
                .filter(|e| e.health.in_rotation(now))
                .count();
            (healthy as f64) * 100.0 < threshold * self.len as f64
        });
        if !panic
            && let Some(e) = self.groups.iter().find_map(|g| {
                g.choose(self.strategy, key, |e| {
                    untried(e) && e.health.in_rotation(now)
                })
            })
        {
            return Some(e);
        }
        self.groups
            .iter()
            .find_map(|g| g.choose(self.strategy, key, untried))
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

    fn set(endpoints: &[EndpointConfig]) -> EndpointSet {
        EndpointSet::new(
            endpoints,
            &HealthRegistry::default(),
            &LoadBalancer::RoundRobin,
            None,
        )
    }

    fn port(set: &EndpointSet, tried: &[SocketAddr]) -> Option<u16> {
        set.pick(tried, 1).map(|e| e.addr.port())
    }

    #[test]
    fn the_first_priority_takes_every_pick_and_the_next_ones_are_fallbacks() {
        let remote = |port| EndpointConfig {
            priority: 1,
            ..ep(port, 5)
        };
        let set = set(&[remote(9), ep(1, 1), ep(2, 1)]);
        assert!((0..50).all(|_| port(&set, &[]) != Some(9)));
        // Retries go to endpoints not tried yet, this locality first.
        let mut tried = Vec::new();
        while let Some(e) = set.pick(&tried, 1) {
            tried.push(e.addr);
        }
        let ports: Vec<u16> = tried.iter().map(|a| a.port()).collect();
        assert!(
            ports[..2].contains(&1) && ports[..2].contains(&2),
            "{ports:?}"
        );
        assert_eq!(ports[2], 9);
        // No local endpoint left: the remote one takes everything.
        let only_remote = super::tests::set(&[remote(9)]);
        assert_eq!(port(&only_remote, &[]), Some(9));
    }

    #[test]
    fn ejected_endpoints_are_passed_over_until_all_are_out() {
        let registry = HealthRegistry::default();
        let set = EndpointSet::new(
            &[ep(1, 1), ep(2, 1), ep(3, 1)],
            &registry,
            &LoadBalancer::RoundRobin,
            None,
        );
        let cfg = crate::config::OutlierDetection {
            max_ejection_percent: 100,
            ..Default::default()
        };
        let h1 = registry.of(SocketAddr::from(([127, 0, 0, 1], 1)));
        assert!(crate::outlier::try_eject(&cfg, &h1, set.healths(), 1).is_some());
        assert!((0..30).all(|_| port(&set, &[]) != Some(1)));
        for p in [2, 3] {
            let h = registry.of(SocketAddr::from(([127, 0, 0, 1], p)));
            crate::outlier::try_eject(&cfg, &h, set.healths(), 1);
        }
        // All out: picks go on rather than fail.
        assert!(port(&set, &[]).is_some());
    }

    #[test]
    fn equal_weights_alternate() {
        let set = set(&[ep(1, 1), ep(2, 1), ep(3, 1)]);
        let picks: Vec<u16> = (0..6).map(|_| port(&set, &[]).unwrap()).collect();
        for p in 1..=3 {
            assert_eq!(picks.iter().filter(|x| **x == p).count(), 2, "{picks:?}");
        }
        assert_ne!(picks[0], picks[1]);
    }

    #[test]
    fn weights_are_respected_and_interleaved() {
        let set = set(&[ep(1, 300), ep(2, 100)]);
        let picks: Vec<u16> = (0..400).map(|_| port(&set, &[]).unwrap()).collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 300);
        // Smooth: never two picks of the light endpoint in a row.
        assert!(picks.windows(2).all(|w| !(w[0] == 2 && w[1] == 2)));
    }

    #[test]
    fn empty_set_picks_nothing() {
        assert!(port(&set(&[]), &[]).is_none());
    }
}
