//! How an endpoint of one priority group is chosen, per
//! MeshLoadBalancingStrategy: weighted round robin (the schedule in
//! `Group`), random, least request (the least busy of a few random ones),
//! and the consistent hashes, ring hash and Maglev, whose tables are built
//! once per config so that a pick is a lookup.

use std::cell::Cell;
use std::net::IpAddr;

use crate::config::{HashPolicy, HashSource, LoadBalancer};

/// The hash a consistent-hash balancer picks by; `None` (no hash policy
/// found a value, or another balancer) picks at random or in turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PickKey(pub Option<u64>);

/// FNV-1a, 64 bits: stable, cheap, good enough spread for a ring.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A mixer for 64-bit values (splitmix64's finalizer).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            ^ (&RNG as *const _ as u64),
    );
}

/// A random number, per thread, no lock: splitmix64, whose every output
/// bit is well mixed (a weighted split takes it modulo the total weight).
pub fn random() -> u64 {
    RNG.with(|c| {
        let next = c.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        c.set(next);
        mix(next)
    })
}

/// The request's hash under `policies`: each policy that finds a value
/// folds it in; a terminal one that found one ends the walk (Envoy's
/// rule).
pub fn request_key(
    policies: &[HashPolicy],
    headers: &http::HeaderMap,
    uri: &http::Uri,
    source: Option<IpAddr>,
) -> PickKey {
    let mut acc: Option<u64> = None;
    for p in policies {
        let value = match &p.source {
            HashSource::Header(name) => headers.get(name).map(|v| fnv(v.as_bytes())),
            HashSource::Cookie(name) => cookie(headers, name).map(|v| fnv(v.as_bytes())),
            HashSource::SourceIp => source.map(|ip| fnv(ip.to_string().as_bytes())),
            HashSource::QueryParameter(name) => query(uri, name).map(|v| fnv(v.as_bytes())),
        };
        if let Some(v) = value {
            acc = Some(acc.map_or(v, |a| a.rotate_left(1) ^ v));
            if p.terminal {
                break;
            }
        }
    }
    PickKey(acc)
}

fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn query<'a>(uri: &'a http::Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// A consistent-hash table over one group's endpoints (indexes into it).
pub enum HashTable {
    /// Sorted (point, endpoint) pairs: a key goes to the first point at or
    /// after it.
    Ring(Vec<(u64, u32)>),
    /// Maglev's lookup table: a key goes to `table[key % len]`.
    Maglev(Vec<u32>),
}

impl HashTable {
    /// The table `lb` asks for over endpoints with `weights` (by index),
    /// identified by `ids` (their addresses, so that the table depends on
    /// who is in the set, not on their order).
    pub fn build(lb: &LoadBalancer, ids: &[u64], weights: &[u64]) -> Option<HashTable> {
        if ids.is_empty() {
            return None;
        }
        match lb {
            LoadBalancer::RingHash {
                min_ring_size,
                max_ring_size,
                ..
            } => Some(HashTable::Ring(ring(
                ids,
                weights,
                *min_ring_size,
                *max_ring_size,
            ))),
            LoadBalancer::Maglev { table_size, .. } => {
                Some(HashTable::Maglev(maglev(ids, weights, *table_size)))
            }
            _ => None,
        }
    }

    /// The endpoints in the order a key tries them: its own first, then
    /// the next ones around the ring or table.
    pub fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let (n, start) = match self {
            // Mixed first: FNV leaves similar keys close together.
            HashTable::Ring(points) => (
                points.len(),
                points.partition_point(|(p, _)| *p < mix(key)) % points.len(),
            ),
            HashTable::Maglev(table) => (table.len(), (mix(key) % table.len() as u64) as usize),
        };
        (0..n).map(move |k| {
            let i = (start + k) % n;
            match self {
                HashTable::Ring(points) => points[i].1 as usize,
                HashTable::Maglev(table) => table[i] as usize,
            }
        })
    }
}

/// Envoy's ring: each endpoint gets points in proportion to its weight,
/// at least `min` points in all (at most `max`).
fn ring(ids: &[u64], weights: &[u64], min: u64, max: u64) -> Vec<(u64, u32)> {
    let total: u64 = weights.iter().sum::<u64>().max(1);
    let size = min.max(ids.len() as u64).min(max.max(1));
    let mut points = Vec::with_capacity(size as usize + ids.len());
    for (i, (id, w)) in ids.iter().zip(weights).enumerate() {
        let n = (size * w / total).max(1);
        for r in 0..n {
            points.push((mix(id ^ mix(r)), i as u32));
        }
    }
    points.sort_unstable();
    points
}

/// Maglev (Eisenbud et al., 2016): each endpoint fills the table along its
/// own permutation, in turns weighted by its weight, until it is full.
fn maglev(ids: &[u64], weights: &[u64], size: u64) -> Vec<u32> {
    let m = size.max(ids.len() as u64);
    let max_w = weights.iter().copied().max().unwrap_or(1).max(1);
    let perms: Vec<(u64, u64)> = ids
        .iter()
        .map(|id| (mix(*id) % m, mix(id ^ 0x5bd1_e995) % (m - 1).max(1) + 1))
        .collect();
    let mut next = vec![0u64; ids.len()];
    let mut table = vec![u32::MAX; m as usize];
    let mut filled = 0u64;
    let mut round = 0u64;
    while filled < m {
        round += 1;
        for i in 0..ids.len() {
            // A lighter endpoint takes its turn in fewer rounds.
            if (round * weights[i]) / max_w == ((round - 1) * weights[i]) / max_w {
                continue;
            }
            let (offset, skip) = perms[i];
            loop {
                let slot = (offset + next[i] * skip) % m;
                next[i] += 1;
                if table[slot as usize] == u32::MAX {
                    table[slot as usize] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64) -> Vec<u64> {
        (1..=n)
            .map(|i| fnv(format!("10.0.0.{i}:80").as_bytes()))
            .collect()
    }

    /// RingHash and Maglev at Kuma's default sizes.
    fn consistent_hashes() -> [LoadBalancer; 2] {
        [
            LoadBalancer::RingHash {
                hash: vec![],
                min_ring_size: 1024,
                max_ring_size: 8 << 20,
            },
            LoadBalancer::Maglev {
                hash: vec![],
                table_size: 65537,
            },
        ]
    }

    fn owner(t: &HashTable, key: u64) -> usize {
        t.walk(key).next().unwrap()
    }

    #[test]
    fn a_key_keeps_its_endpoint_and_losing_one_endpoint_moves_few_others() {
        for lb in consistent_hashes() {
            let five = HashTable::build(&lb, &ids(5), &[1; 5]).unwrap();
            let four = HashTable::build(&lb, &ids(4), &[1; 4]).unwrap();
            let keys: Vec<u64> = (0..2000u64).map(|k| mix(k + 7)).collect();
            let mut counts = [0usize; 5];
            let mut moved = 0;
            for k in &keys {
                let a = owner(&five, *k);
                assert_eq!(a, owner(&five, *k));
                counts[a] += 1;
                if a != 4 && owner(&four, *k) != a {
                    moved += 1;
                }
            }
            // Spread over all five, and keys of the four that stay stay.
            assert!(counts.iter().all(|c| *c > 200), "{counts:?}");
            // Few move: a ring gives the four more points each (as Envoy's
            // does), Maglev refills the lost endpoint's slots.
            assert!(moved < 400, "{moved} keys moved");
        }
    }

    #[test]
    fn similar_keys_spread() {
        for lb in consistent_hashes() {
            let t = HashTable::build(&lb, &ids(3), &[1; 3]).unwrap();
            let owners: std::collections::BTreeSet<usize> = (0..12)
                .map(|u| owner(&t, fnv(format!("user-{u}").as_bytes())))
                .collect();
            assert_eq!(owners.len(), 3);
        }
    }

    #[test]
    fn random_draws_split_as_weights_say_in_short_runs_too() {
        // 300 draws at 90/10, many times: the 10 % share stays near 30
        // (a binomial's standard deviation is 5.2).
        let mut worst = 0i64;
        for _ in 0..200 {
            let small = (0..300).filter(|_| random() % 100 >= 90).count() as i64;
            worst = worst.max((small - 30).abs());
        }
        assert!(worst <= 22, "{worst}");
        let mean = (0..100_000).filter(|_| random() % 100 >= 90).count();
        assert!((9_500..10_500).contains(&mean), "{mean}");
    }

    #[test]
    fn weights_shape_the_share() {
        let lb = LoadBalancer::Maglev {
            hash: vec![],
            table_size: 65537,
        };
        let t = HashTable::build(&lb, &ids(2), &[3, 1]).unwrap();
        let HashTable::Maglev(table) = &t else {
            unreachable!()
        };
        let heavy = table.iter().filter(|i| **i == 0).count() as f64 / table.len() as f64;
        assert!((0.7..0.8).contains(&heavy), "{heavy}");
    }

    #[test]
    fn hash_policies_read_headers_cookies_queries_and_stop_at_a_terminal_one() {
        let mut h = http::HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        h.insert("cookie", "a=1; session=abc".parse().unwrap());
        let uri: http::Uri = "/p?user=bob&x=1".parse().unwrap();
        let p = |source, terminal| HashPolicy { source, terminal };
        let header = p(HashSource::Header("x-user".parse().unwrap()), true);
        let cookie = p(HashSource::Cookie("session".into()), false);
        let q = p(HashSource::QueryParameter("user".into()), false);
        assert_eq!(
            request_key(std::slice::from_ref(&header), &h, &uri, None),
            PickKey(Some(fnv(b"alice")))
        );
        assert_eq!(
            request_key(std::slice::from_ref(&cookie), &h, &uri, None),
            PickKey(Some(fnv(b"abc")))
        );
        assert_eq!(
            request_key(std::slice::from_ref(&q), &h, &uri, None),
            PickKey(Some(fnv(b"bob")))
        );
        // Terminal and found: the rest are not read.
        assert_eq!(
            request_key(&[header.clone(), q.clone()], &h, &uri, None),
            PickKey(Some(fnv(b"alice")))
        );
        let missing = p(HashSource::Header("x-none".parse().unwrap()), true);
        assert_eq!(request_key(&[missing], &h, &uri, None), PickKey(None));
    }
}
