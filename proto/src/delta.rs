//! A config's version, and configs as deltas: one definition for the CP,
//! which sends them, and the agent, which rebuilds the whole config from
//! them and checks that it has the version the CP says.

use std::collections::BTreeMap;

use prost::Message;

use crate::v1::{Cluster, ConfigDelta, ProxyConfig};

/// FNV-1a, 64 bits: cheap, stable across processes and releases.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// A part, length first, so that parts cannot run into each other.
    fn part(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }
}

/// The hash of one cluster, as `version` folds it in. The CP computes it
/// once per cluster however many dataplanes get that cluster.
pub fn cluster_hash(cluster: &Cluster) -> u64 {
    match &cluster.policy {
        None => {
            let mut h = Fnv::new();
            h.bytes(&cluster.encode_to_vec());
            h.0
        }
        // The shared part, then the one dataplane's policy folded in: the
        // CP hashes the shared part once for every caller.
        Some(policy) => {
            let shared = Cluster {
                policy: None,
                ..cluster.clone()
            };
            policy_hash(cluster_hash(&shared), policy)
        }
    }
}

/// The hash of a cluster whose part without a policy hashes to `shared`,
/// with one dataplane's `policy` added (what `cluster_hash` computes).
pub fn policy_hash(shared: u64, policy: &crate::v1::ClusterPolicy) -> u64 {
    let mut h = Fnv::new();
    h.bytes(&shared.to_le_bytes());
    h.part(&policy.encode_to_vec());
    h.0
}

/// What a config is, in hashes: enough to version it and to tell what a
/// later config changed, without keeping the config itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigDigest {
    /// Everything but the clusters.
    pub rest: u64,
    /// Each cluster's `cluster_hash`, by name.
    pub clusters: BTreeMap<String, u64>,
}

impl ConfigDigest {
    /// The digest of `config`; clusters count by the hash `cluster_hash`
    /// (or a cache of its results) gives.
    pub fn of(config: &ProxyConfig, cluster_hash: impl Fn(&Cluster) -> u64) -> ConfigDigest {
        let mut h = Fnv::new();
        h.part(config.mesh.as_bytes());
        h.part(config.name.as_bytes());
        for i in &config.inbounds {
            h.part(&i.encode_to_vec());
        }
        h.part(b"outbounds");
        for o in &config.outbounds {
            h.part(&o.encode_to_vec());
        }
        h.part(
            &config
                .mtls
                .as_ref()
                .map(Message::encode_to_vec)
                .unwrap_or_default(),
        );
        h.part(
            &config
                .transparent_proxy
                .as_ref()
                .map(Message::encode_to_vec)
                .unwrap_or_default(),
        );
        for r in &config.dns_records {
            h.part(&r.encode_to_vec());
        }
        h.part(b"passthrough_access_logs");
        for b in &config.passthrough_access_logs {
            h.part(&b.encode_to_vec());
        }
        h.part(
            &config
                .zone_proxy
                .as_ref()
                .map(Message::encode_to_vec)
                .unwrap_or_default(),
        );
        ConfigDigest {
            rest: h.0,
            clusters: config
                .clusters
                .iter()
                .map(|c| (c.name.clone(), cluster_hash(c)))
                .collect(),
        }
    }

    /// The config's version: the hashes folded in name order (the encoding
    /// is deterministic: maps are BTreeMaps, lists are sorted).
    pub fn version(&self) -> String {
        let mut h = Fnv::new();
        h.bytes(&self.rest.to_le_bytes());
        for (name, hash) in &self.clusters {
            h.part(name.as_bytes());
            h.bytes(&hash.to_le_bytes());
        }
        format!("{:016x}", h.0)
    }
}

/// The version of a config, as the CP sends it and the agent checks it.
pub fn version(config: &ProxyConfig) -> String {
    ConfigDigest::of(config, cluster_hash).version()
}

fn without_clusters(config: &ProxyConfig) -> ProxyConfig {
    ProxyConfig {
        mesh: config.mesh.clone(),
        name: config.name.clone(),
        inbounds: config.inbounds.clone(),
        outbounds: config.outbounds.clone(),
        mtls: config.mtls.clone(),
        transparent_proxy: config.transparent_proxy,
        dns_records: config.dns_records.clone(),
        clusters: Vec::new(),
        zone_proxy: config.zone_proxy.clone(),
        passthrough_access_logs: config.passthrough_access_logs.clone(),
    }
}

/// What turns the config `old` digests (of version `base_version`) into
/// `new`, whose digest is `now`.
pub fn diff(
    base_version: &str,
    old: &ConfigDigest,
    new: &ProxyConfig,
    now: &ConfigDigest,
) -> ConfigDelta {
    let clusters = new
        .clusters
        .iter()
        .filter(|c| old.clusters.get(&c.name) != now.clusters.get(&c.name))
        .cloned()
        .collect();
    let removed_clusters = old
        .clusters
        .keys()
        .filter(|name| !now.clusters.contains_key(*name))
        .cloned()
        .collect();
    ConfigDelta {
        base_version: base_version.to_string(),
        clusters,
        removed_clusters,
        rest: (old.rest != now.rest).then(|| without_clusters(new)),
    }
}

/// The whole config `delta` makes of `base`.
pub fn apply(base: &ProxyConfig, delta: &ConfigDelta) -> ProxyConfig {
    let mut out = match &delta.rest {
        Some(rest) => without_clusters(rest),
        None => without_clusters(base),
    };
    let mut clusters: BTreeMap<&str, &Cluster> =
        base.clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    for name in &delta.removed_clusters {
        clusters.remove(name.as_str());
    }
    for c in &delta.clusters {
        clusters.insert(c.name.as_str(), c);
    }
    out.clusters = clusters.into_values().cloned().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Endpoint, OutboundListener};

    fn cluster(name: &str, endpoints: &[&str]) -> Cluster {
        Cluster {
            name: name.into(),
            endpoints: endpoints
                .iter()
                .map(|a| Endpoint {
                    address: a.to_string(),
                    port: 80,
                    weight: 1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn config(clusters: Vec<Cluster>, outbounds: &[&str]) -> ProxyConfig {
        ProxyConfig {
            mesh: "default".into(),
            name: "web".into(),
            outbounds: outbounds
                .iter()
                .map(|s| OutboundListener {
                    name: format!("outbound:{s}"),
                    cluster: s.to_string(),
                    ..Default::default()
                })
                .collect(),
            clusters,
            ..Default::default()
        }
    }

    #[test]
    fn a_delta_carries_what_changed_and_rebuilds_the_same_version() {
        let old = config(
            vec![cluster("a", &["10.0.0.1"]), cluster("b", &["10.0.0.2"])],
            &["a", "b"],
        );
        // b gets an endpoint: only b travels.
        let new = config(
            vec![
                cluster("a", &["10.0.0.1"]),
                cluster("b", &["10.0.0.2", "10.0.0.3"]),
            ],
            &["a", "b"],
        );
        let digest = |c: &ProxyConfig| ConfigDigest::of(c, cluster_hash);
        let d = diff(&version(&old), &digest(&old), &new, &digest(&new));
        assert_eq!(
            d.clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert!(d.removed_clusters.is_empty() && d.rest.is_none());
        assert_eq!(version(&apply(&old, &d)), version(&new));
        assert_eq!(apply(&old, &d), new);
        // a goes and c comes, with a listener: the rest travels too.
        let newer = config(
            vec![cluster("b", &["10.0.0.2"]), cluster("c", &["10.0.0.4"])],
            &["b", "c"],
        );
        let d = diff(&version(&new), &digest(&new), &newer, &digest(&newer));
        assert_eq!(d.removed_clusters, ["a"]);
        assert_eq!(d.clusters.len(), 2);
        assert!(d.rest.is_some());
        assert_eq!(apply(&new, &d), newer);
        // Versions see every part, and a digest versions as its config.
        assert_eq!(digest(&newer).version(), version(&newer));
        assert_ne!(version(&old), version(&new));
        assert_ne!(version(&new), version(&newer));
    }
}
