//! The configs of zone proxies: one listener that routes each connection by
//! its TLS SNI (`koguma_types::sni`) without terminating it.
//!
//! - A zone ingress serves every mesh with mTLS on: a route per service
//!   with instances in this zone, to those instances.
//! - A zone egress serves the meshes with `routing.zoneEgress`: a route per
//!   service offered by other zones, to their ingresses.
//!
//! Clusters are named `<mesh>:<service>`, as Kuma names them on zone
//! proxies, so that one service name in two meshes stays two clusters.

use std::collections::BTreeMap;
use std::net::IpAddr;

use koguma_api::ResourceType;
use koguma_proto::v1 as pb;

use super::ConfigSnapshot;
use super::index::MeshContext;

/// Which zone proxy, and where it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneProxyKind {
    Ingress,
    Egress,
}

impl ZoneProxyKind {
    pub fn resource_type(self) -> ResourceType {
        match self {
            ZoneProxyKind::Ingress => ResourceType::ZoneIngress,
            ZoneProxyKind::Egress => ResourceType::ZoneEgress,
        }
    }
}

/// The config of zone proxy `name`; `None` when it is not in the catalog.
pub fn compute(
    snapshot: &ConfigSnapshot,
    kind: ZoneProxyKind,
    name: &str,
) -> Option<pb::ProxyConfig> {
    let stored = snapshot.catalog.get(kind.resource_type(), "", name)?;
    let (address, port) = match kind {
        ZoneProxyKind::Ingress => {
            let n = &stored.resource.as_zone_ingress()?.networking;
            (n.address.clone(), n.port)
        }
        ZoneProxyKind::Egress => {
            let n = &stored.resource.as_zone_egress()?.networking;
            (n.address.clone(), n.port)
        }
    };
    let mut routes = Vec::new();
    let mut clusters = Vec::new();
    for (mesh, ctx) in &snapshot.index.meshes {
        if !ctx.mtls_on() {
            continue;
        }
        let mesh_routes = match kind {
            ZoneProxyKind::Ingress => ingress_routes(ctx),
            ZoneProxyKind::Egress if ctx.zone_egress() => egress_routes(ctx),
            ZoneProxyKind::Egress => Vec::new(),
        };
        for (service, sni, endpoints) in mesh_routes {
            let cluster = format!("{mesh}:{service}");
            routes.push(pb::SniRoute {
                sni,
                cluster: cluster.clone(),
                terminate: None,
            });
            clusters.push(pb::Cluster {
                name: cluster,
                lb_policy: pb::LbPolicy::RoundRobin.into(),
                endpoints,
                identity: String::new(),
                sni: String::new(),
                unavailable: String::new(),
            });
        }
    }
    routes.sort_by(|a, b| a.sni.cmp(&b.sni));
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    Some(pb::ProxyConfig {
        name: name.to_string(),
        clusters,
        zone_proxy: Some(pb::ZoneProxy {
            address: if address.is_empty() {
                "0.0.0.0".into()
            } else {
                address
            },
            port,
            routes,
            mesh_tls: Vec::new(),
        }),
        ..Default::default()
    })
}

type Route = (String, String, Vec<pb::Endpoint>);

/// The local instances of each service: what other zones reach through
/// this ingress. Never another zone's ingress, so traffic cannot loop.
fn ingress_routes(ctx: &MeshContext) -> Vec<Route> {
    ctx.services
        .iter()
        .filter(|(_, e)| e.local > 0)
        .map(|(service, e)| {
            let endpoints = e.cluster.endpoints[..e.local]
                .iter()
                .map(|ep| pb::Endpoint {
                    weight: 1,
                    priority: 0,
                    ..ep.clone()
                })
                .collect();
            (service.clone(), e.cluster.sni.clone(), endpoints)
        })
        .collect()
}

/// The ingresses of the other zones that offer each service, weighted by
/// their instances.
fn egress_routes(ctx: &MeshContext) -> Vec<Route> {
    ctx.services
        .iter()
        .filter_map(|(service, e)| {
            let remote = ctx.remote_of(service)?;
            let endpoints: Vec<pb::Endpoint> = remote
                .ingresses
                .iter()
                .filter(|i| i.address.parse::<IpAddr>().is_ok())
                .map(|i| pb::Endpoint {
                    address: i.address.clone(),
                    port: i.port,
                    weight: i.instances.max(1),
                    tags: BTreeMap::new(),
                    zone: i.zone.clone(),
                    priority: 0,
                })
                .collect();
            (!endpoints.is_empty()).then(|| (service.clone(), e.cluster.sni.clone(), endpoints))
        })
        .collect()
}
