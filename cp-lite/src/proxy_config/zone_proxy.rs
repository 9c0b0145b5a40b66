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

use koguma_api::ResourceType;
use koguma_proto::v1 as pb;

use super::index::MeshContext;
use super::{ConfigSnapshot, permissions};
use crate::catalog::Catalog;

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
    let mut mesh_tls = Vec::new();
    for (mesh, ctx) in &snapshot.index.meshes {
        if !ctx.mtls_on() {
            continue;
        }
        let mesh_routes = match kind {
            ZoneProxyKind::Ingress => ingress_routes(ctx),
            ZoneProxyKind::Egress if ctx.zone_egress() => egress_routes(ctx),
            ZoneProxyKind::Egress => Vec::new(),
        };
        if kind == ZoneProxyKind::Egress && ctx.zone_egress() {
            let external = external_routes(&snapshot.catalog, mesh, ctx);
            if !external.is_empty() {
                mesh_tls.push(pb::ZoneProxyMeshTls {
                    mesh: mesh.clone(),
                    tls: Some(pb::MeshTls {
                        mode: pb::MtlsMode::Strict.into(),
                        peer_uri_prefix: format!("spiffe://{mesh}/"),
                        ..Default::default()
                    }),
                });
            }
            for (route, cluster) in external {
                routes.push(route);
                clusters.push(cluster);
            }
        }
        for (service, sni, endpoints) in mesh_routes {
            let cluster = format!("{mesh}:{service}");
            routes.push(pb::SniRoute {
                sni,
                cluster: cluster.clone(),
                terminate: None,
            });
            clusters.push(pb::Cluster {
                name: cluster,
                endpoints,
                identity: String::new(),
                sni: String::new(),
                unavailable: String::new(),
                policy: None,
                stats_name: String::new(),
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
            mesh_tls,
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
                .filter_map(|i| i.endpoint(0, BTreeMap::new()))
                .collect();
            (!endpoints.is_empty()).then(|| (service.clone(), e.cluster.sni.clone(), endpoints))
        })
        .collect()
}

/// Each ExternalService of the mesh: mesh mTLS ends here (the caller is
/// checked against the permissions that select the service's tags), and a
/// connection of our own goes to the real host.
fn external_routes(
    catalog: &Catalog,
    mesh: &str,
    ctx: &MeshContext,
) -> Vec<(pb::SniRoute, pb::Cluster)> {
    let mut out = Vec::new();
    for (service, es) in ctx.external_services() {
        let Some(entry) = ctx.services.get(service) else {
            continue;
        };
        let upstream_tls = match es.networking.tls.as_ref().filter(|t| t.enabled) {
            None => None,
            Some(tls) => match upstream_tls(catalog, mesh, tls) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(%mesh, external_service = %service, error = %e, "ExternalService left out of the egress config");
                    continue;
                }
            },
        };
        // Validation refused an address without one.
        let Some((host, port)) = es.host_port() else {
            continue;
        };
        let cluster = format!("{mesh}:{service}");
        let route = pb::SniRoute {
            sni: entry.cluster.sni.clone(),
            cluster: cluster.clone(),
            terminate: Some(pb::TerminateMesh {
                mesh: mesh.to_string(),
                permissions: Some(permissions::for_tags(catalog, mesh, &es.tags)),
                upstream_tls,
                upstream_host: host.to_string(),
                upstream_port: u32::from(port),
            }),
        };
        let cluster = pb::Cluster {
            name: cluster,
            ..Default::default()
        };
        out.push((route, cluster));
    }
    out
}

/// What the egress needs to originate TLS to an ExternalService.
fn upstream_tls(
    catalog: &Catalog,
    mesh: &str,
    tls: &koguma_api::ExternalTls,
) -> Result<pb::UpstreamTls, String> {
    let pem = |source: &Option<koguma_api::DataSource>, what: &str| -> Result<String, String> {
        match source {
            None => Ok(String::new()),
            Some(s) => s
                .read_with(|name| catalog.secret_bytes(mesh, name))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| format!("networking.tls.{what}: {e}")),
        }
    };
    Ok(pb::UpstreamTls {
        ca_cert_pem: pem(&tls.ca_cert, "caCert")?,
        server_name: tls.server_name.clone().unwrap_or_default(),
        skip_hostname_verification: tls.skip_hostname_verification.unwrap_or(false),
        client_cert_pem: pem(&tls.client_cert, "clientCert")?,
        client_key_pem: pem(&tls.client_key, "clientKey")?,
    })
}
