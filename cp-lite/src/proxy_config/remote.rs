//! What other zones offer, as this zone's configs see it: every remote
//! ZoneIngress's `availableServices`, per mesh and service (Kuma's
//! `pkg/xds/topology/outbound.go`), and the local zone egresses that
//! cross-zone traffic leaves through when the mesh asks for it.
//!
//! Zone proxies are few and their lists change at most every batching
//! window, so the whole view is recomputed when any of them changes and
//! compared per service: a sidecar config changes only where a service's
//! remote side did.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::OrdMap;
use koguma_api::ResourceType;

use crate::catalog::Catalog;
use crate::store::Origin;

/// A remote zone's ingress, as a caller reaches it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IngressEndpoint {
    pub zone: String,
    pub address: String,
    pub port: u32,
    /// The service's instances behind it: the endpoint's weight.
    pub instances: u32,
}

impl IngressEndpoint {
    /// The ingress as an endpoint of `priority` with `tags`, weighing its
    /// instances; `None` (logged) when its address is not an IP address.
    pub fn endpoint(
        &self,
        priority: u32,
        tags: BTreeMap<String, String>,
    ) -> Option<koguma_proto::v1::Endpoint> {
        if self.address.parse::<std::net::IpAddr>().is_err() {
            tracing::warn!(zone = %self.zone, address = %self.address, "remote zone ingress skipped: its advertised address is not an IP address");
            return None;
        }
        Some(koguma_proto::v1::Endpoint {
            address: self.address.clone(),
            port: self.port,
            weight: self.instances.max(1),
            tags,
            zone: self.zone.clone(),
            priority,
        })
    }
}

/// One service of one mesh in the other zones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteService {
    /// One per distinct advertised address: ingresses behind one load
    /// balancer count once (Kuma collapses them too).
    pub ingresses: Vec<IngressEndpoint>,
    /// The tag sets its instances carry: protocol and permissions.
    pub tag_sets: BTreeSet<BTreeMap<String, String>>,
}

/// mesh → service → what other zones offer of it.
pub type RemoteServices = BTreeMap<String, BTreeMap<String, RemoteService>>;

/// The ZoneIngresses synced from other zones that can be reached.
pub fn remote_services(catalog: &Catalog) -> RemoteServices {
    let mut by_coordinate: BTreeMap<(String, String), BTreeMap<(String, u32), IngressEndpoint>> =
        BTreeMap::new();
    let mut out: RemoteServices = BTreeMap::new();
    for stored in catalog.list(ResourceType::ZoneIngress, None) {
        // A zone's own ingresses serve the other zones, not its sidecars.
        if stored.origin != Origin::Kds {
            continue;
        }
        let Some(zi) = stored.resource.as_zone_ingress() else {
            continue;
        };
        let Some((address, port)) = zi.public_address() else {
            continue;
        };
        // Per service: the instances behind this ingress, over its tag sets.
        let mut counts: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        for available in zi.available_services.iter().filter(|a| !a.external_service) {
            let Some(service) = available.tags.get(koguma_api::tags::SERVICE) else {
                continue;
            };
            *counts.entry((&available.mesh, service)).or_default() += available.instances;
            out.entry(available.mesh.clone())
                .or_default()
                .entry(service.clone())
                .or_default()
                .tag_sets
                .insert(available.tags.clone());
        }
        for ((mesh, service), instances) in counts {
            let endpoint = IngressEndpoint {
                zone: zi.zone.clone(),
                address: address.to_string(),
                port,
                instances,
            };
            let slot = by_coordinate
                .entry((mesh.to_string(), service.to_string()))
                .or_default()
                .entry((address.to_string(), port))
                .or_insert_with(|| endpoint.clone());
            slot.instances = slot.instances.max(instances);
        }
    }
    for ((mesh, service), endpoints) in by_coordinate {
        if let Some(remote) = out.get_mut(&mesh).and_then(|m| m.get_mut(&service)) {
            remote.ingresses = endpoints.into_values().collect();
        }
    }
    out
}

/// The zone egresses of this zone (`address:port`), sorted.
pub fn local_egresses(catalog: &Catalog) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = catalog
        .list(ResourceType::ZoneEgress, None)
        .filter(|r| r.origin != Origin::Kds)
        .filter_map(|r| r.resource.as_zone_egress())
        .map(|ze| (ze.networking.address.clone(), ze.networking.port))
        .filter(|(a, p)| !a.is_empty() && *p != 0)
        .collect();
    out.sort();
    out
}

/// The services of one mesh whose remote side differs between `old` and
/// `new`.
pub fn changed_services(
    old: &OrdMap<String, Arc<RemoteService>>,
    new: &BTreeMap<String, RemoteService>,
) -> BTreeSet<String> {
    let mut changed: BTreeSet<String> = old
        .keys()
        .filter(|s| !new.contains_key(*s))
        .cloned()
        .collect();
    for (service, remote) in new {
        if old.get(service).is_none_or(|o| **o != *remote) {
            changed.insert(service.clone());
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredResource;
    use koguma_api::Resource;

    fn ingress(name: &str, zone: &str, addr: &str, services: &[(&str, &str, u32)]) -> Resource {
        let available: Vec<serde_json::Value> = services
            .iter()
            .map(|(mesh, svc, n)| {
                serde_json::json!({"mesh": mesh, "tags": {"kuma.io/service": svc}, "instances": n})
            })
            .collect();
        Resource::from_value(serde_json::json!({
            "type": "ZoneIngress", "name": name, "zone": zone,
            "networking": {"address": "10.0.0.1", "port": 10001,
                           "advertisedAddress": addr, "advertisedPort": 10001},
            "availableServices": available,
        }))
        .unwrap()
    }

    fn catalog(items: Vec<(Resource, Origin)>) -> Catalog {
        let mut c = Catalog::default();
        for (resource, origin) in items {
            c.insert(Arc::new(StoredResource {
                resource,
                origin,
                version: 1,
            }));
        }
        c
    }

    #[test]
    fn remote_ingresses_carry_instance_counts_and_collapse_by_address() {
        let c = catalog(vec![
            (
                ingress("b-1", "zone-b", "192.0.2.1", &[("default", "backend", 3)]),
                Origin::Kds,
            ),
            // A second ingress of zone-b behind the same address.
            (
                ingress("b-2", "zone-b", "192.0.2.1", &[("default", "backend", 3)]),
                Origin::Kds,
            ),
            (
                ingress("c-1", "zone-c", "192.0.2.3", &[("default", "backend", 1)]),
                Origin::Kds,
            ),
            // This zone's own ingress is not a way to reach anything.
            (
                ingress("a-1", "zone-a", "192.0.2.9", &[("default", "backend", 2)]),
                Origin::Agent,
            ),
        ]);
        let remote = remote_services(&c);
        let backend = &remote["default"]["backend"];
        let got: Vec<(&str, u32)> = backend
            .ingresses
            .iter()
            .map(|e| (e.address.as_str(), e.instances))
            .collect();
        assert_eq!(got, vec![("192.0.2.1", 3), ("192.0.2.3", 1)]);
    }
}
