//! One dataplane's proxy config, assembled from its mesh's context: its
//! inbounds, a listener per declared outbound and, under transparent
//! proxying, one per reachable service VIP, each with the cluster the index
//! computed once for every caller.

use std::collections::{BTreeMap, BTreeSet};

use koguma_api::policy::merge::Caller;
use koguma_api::{Networking, Protocol};
use koguma_proto::v1 as pb;

use super::index::{self, MeshContext};
use super::listener_policy::{self, KumaValues};
use super::routes::{self, OutboundRoutes};
use super::{permissions, transparent};
use crate::catalog::Catalog;

/// What one config is made of besides the mesh context.
pub struct Inputs<'a> {
    pub catalog: &'a Catalog,
    pub mesh: &'a str,
    pub name: &'a str,
    pub net: &'a Networking,
    /// The transparent proxy in force (`transparent::settings`), if any.
    pub transparent_proxy: Option<pb::TransparentProxy>,
    /// The services that get a VIP outbound (transparent proxying only).
    pub reachable: &'a BTreeSet<String>,
}

/// The config of one dataplane. With mesh mTLS on it carries the mode and
/// permissions but no certificates: the session adds those.
pub fn build(ctx: &MeshContext, inputs: Inputs<'_>) -> pb::ProxyConfig {
    let Inputs {
        catalog,
        mesh,
        name,
        net,
        transparent_proxy,
        reachable,
    } = inputs;
    let mtls = ctx.mtls_on().then(|| pb::MeshTls {
        mode: pb::MtlsMode::from(
            ctx.mesh
                .as_ref()
                .and_then(|m| m.resource.as_mesh())
                .and_then(|m| m.mtls_backend())
                .map(|b| b.mode())
                .unwrap_or_default(),
        )
        .into(),
        peer_uri_prefix: format!("spiffe://{mesh}/"),
        ..Default::default()
    });
    let labels = catalog
        .get(koguma_api::ResourceType::Dataplane, mesh, name)
        .map(|r| r.resource.meta.labels.clone())
        .unwrap_or_default();
    let (own_service, zone, own_ip) = listener_policy::dataplane_values(net);
    let inbounds = net
        .inbound
        .iter()
        .map(|i| {
            let subject = koguma_api::InboundSubject {
                tags: &i.tags,
                dataplane: name,
                labels: &labels,
                inbound_name: i.name.as_deref(),
                port: i.port,
            };
            let address = i.listen_address(net).to_string();
            let (service_address, service_port) = i.service_target(net);
            pb::InboundListener {
                name: format!("inbound:{address}:{}", i.port),
                address,
                port: i.port,
                service_address: service_address.to_string(),
                service_port,
                protocol: pb::Protocol::from(i.protocol()).into(),
                service: i.service().to_string(),
                tags: i.tags.clone(),
                permissions: mtls
                    .as_ref()
                    .map(|_| inbound_permissions(ctx, catalog, mesh, name, i)),
                policy: ctx.policies.for_inbound(&subject),
                listener_policy: ctx.policies.listener_for_inbound(
                    &subject,
                    mesh,
                    &KumaValues {
                        mesh,
                        zone,
                        source_service: "unknown",
                        source_ip: own_ip,
                        destination_service: i.service(),
                        direction: "INBOUND",
                        http: listener_policy::is_http(i.protocol()),
                    },
                ),
            }
        })
        .collect();
    let outbounds_of = |service: &str, address: &str, ports: &[u32]| {
        let proto = ctx
            .services
            .get(service)
            .map_or(Protocol::Tcp, |e| e.protocol);
        ports
            .iter()
            .map(|&port| pb::OutboundListener {
                name: format!("outbound:{address}:{port}"),
                address: address.to_string(),
                port,
                protocol: pb::Protocol::from(proto).into(),
                cluster: service.to_string(),
                service: service.to_string(),
                transparent: false,
                http_routes: Vec::new(),
                tcp_backends: Vec::new(),
                listener_policy: None,
            })
            .collect::<Vec<_>>()
    };
    let mut outbounds: Vec<pb::OutboundListener> = net
        .outbound
        .iter()
        .flat_map(|o| outbounds_of(o.service(), o.listen_address(), &[o.port]))
        .collect();
    let mut dns_records = Vec::new();
    if let Some(tp) = &transparent_proxy {
        let (vip_outbounds, records) =
            transparent::vip_outbounds(ctx, reachable, tp.ipv6, outbounds_of);
        outbounds.extend(vip_outbounds);
        dns_records = records;
    }
    // The routes of each service sent to, computed once however many
    // listeners send to it.
    let caller = Caller {
        name,
        labels: &labels,
        inbounds: net.inbound.iter().map(|i| &i.tags).collect(),
    };
    let protocol_of = |s: &str| ctx.services.get(s).map_or(Protocol::Tcp, |e| e.protocol);
    let mut routes: BTreeMap<String, OutboundRoutes> = BTreeMap::new();
    for o in &mut outbounds {
        let r = routes.entry(o.cluster.clone()).or_insert_with(|| {
            routes::for_outbound(
                ctx,
                &ctx.policies,
                &caller,
                &o.cluster,
                protocol_of(&o.cluster),
            )
        });
        o.http_routes = r.http.clone();
        o.tcp_backends = r.tcp.clone();
        let values = KumaValues {
            mesh,
            zone,
            source_service: own_service,
            source_ip: own_ip,
            destination_service: &o.service,
            direction: "OUTBOUND",
            http: listener_policy::is_http(protocol_of(&o.service)),
        };
        o.listener_policy = ctx
            .policies
            .listener_for_caller(&caller, &o.service, &values);
    }
    let mut passthrough_access_logs = Vec::new();
    if transparent_proxy.is_some_and(|tp| tp.passthrough) {
        let values = KumaValues {
            mesh,
            zone,
            source_service: own_service,
            source_ip: own_ip,
            destination_service: "external",
            direction: "OUTBOUND",
            http: false,
        };
        passthrough_access_logs = ctx
            .policies
            .listener_for_caller(&caller, "pass_through", &values)
            .map(|p| p.access_logs)
            .unwrap_or_default();
    }
    // One cluster per service, however many listeners and routes send to
    // it, with what the mesh's policies set for this dataplane's traffic.
    let mut services: BTreeSet<&str> = outbounds.iter().map(|o| o.cluster.as_str()).collect();
    services.extend(
        routes
            .values()
            .flat_map(|r| r.services.iter().map(String::as_str)),
    );
    let mut clusters: Vec<pb::Cluster> = services
        .into_iter()
        .map(|s| {
            let mut c = cluster(ctx, mesh, s, mtls.is_some());
            c.policy = ctx.policies.for_caller(&caller, s, protocol_of(s));
            c
        })
        .collect();
    for subset in routes.into_values().flat_map(|r| r.subsets) {
        if !clusters.iter().any(|c| c.name == subset.name) {
            clusters.push(subset);
        }
    }
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    pb::ProxyConfig {
        mesh: mesh.to_string(),
        name: name.to_string(),
        inbounds,
        outbounds,
        mtls,
        transparent_proxy,
        dns_records,
        clusters,
        zone_proxy: None,
        passthrough_access_logs,
    }
}

/// The cluster of `service`, as the index has it. A service nobody
/// provides yet gets an empty one: its callers' HTTP requests get 503 until
/// an instance comes.
fn cluster(ctx: &MeshContext, mesh: &str, service: &str, mtls: bool) -> pb::Cluster {
    match ctx.services.get(service) {
        Some(entry) => entry.cluster.clone(),
        None => index::cluster(mesh, service, mtls, Vec::new()),
    }
}

/// What an inbound enforces: its service's entry has it, computed once for
/// every instance with the same tags (and inbound, when policies select
/// dataplanes).
pub fn inbound_permissions(
    ctx: &MeshContext,
    catalog: &Catalog,
    mesh: &str,
    name: &str,
    inbound: &koguma_api::Inbound,
) -> pb::Permissions {
    ctx.services
        .get(inbound.service())
        .and_then(|e| e.permissions_of(name, inbound.port, &inbound.tags).cloned())
        .unwrap_or_else(|| {
            let no_labels = BTreeMap::new();
            let stored = catalog.get(koguma_api::ResourceType::Dataplane, mesh, name);
            let subject = koguma_api::InboundSubject {
                tags: &inbound.tags,
                dataplane: name,
                labels: stored.map_or(&no_labels, |r| &r.resource.meta.labels),
                inbound_name: inbound.name.as_deref(),
                port: inbound.port,
            };
            permissions::for_inbound(catalog, mesh, &subject)
        })
}
