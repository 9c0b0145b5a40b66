//! Computes one dataplane's proxy config from a catalog snapshot, and its
//! version: a hash of the encoded config, so the same config always has the
//! same version, across streams and CP restarts.

use std::collections::BTreeSet;
use std::net::IpAddr;

use koguma_api::Protocol;
use koguma_proto::v1 as pb;
use prost::Message;

use super::{permissions, transparent};
use crate::catalog::Catalog;

fn protocol(p: Protocol) -> pb::Protocol {
    match p {
        Protocol::Tcp => pb::Protocol::Tcp,
        Protocol::Http => pb::Protocol::Http,
        Protocol::Http2 => pb::Protocol::Http2,
        Protocol::Grpc => pb::Protocol::Grpc,
    }
}

/// The endpoints of `service` in `mesh` (every ready inbound that carries
/// it, on dataplanes that are not draining) and the service's protocol: the
/// one all its inbounds agree on, else tcp, as Kuma does. The protocol is
/// taken from every inbound, ready or not, so that a service whose last
/// endpoint goes away still answers HTTP callers with a 503.
fn service_endpoints(
    catalog: &Catalog,
    mesh: &str,
    service: &str,
) -> (Vec<pb::Endpoint>, Protocol) {
    let mut endpoints = Vec::new();
    let mut protocols = BTreeSet::new();
    for (name, dp) in catalog.dataplanes(mesh) {
        let Some(net) = dp.networking() else { continue };
        let draining = catalog.is_draining(mesh, name);
        for inbound in net.inbound.iter().filter(|i| i.service() == service) {
            protocols.insert(inbound.protocol().as_str());
            if draining || !inbound.is_ready() {
                continue;
            }
            let address = inbound
                .address
                .as_deref()
                .unwrap_or_else(|| net.reachable_address());
            if address.parse::<IpAddr>().is_err() {
                tracing::warn!(
                    dataplane = name,
                    address,
                    "endpoint skipped: dataplane address is not an IP address"
                );
                continue;
            }
            endpoints.push(pb::Endpoint {
                address: address.to_string(),
                port: inbound.port,
                weight: 1,
                tags: inbound.tags.clone(),
            });
        }
    }
    endpoints.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
    let proto = match protocols.len() {
        1 => Protocol::from_tag(protocols.first().copied()),
        _ => Protocol::Tcp,
    };
    (endpoints, proto)
}

/// The config of dataplane `name`. With mesh mTLS on it carries the mode
/// and permissions but no certificates: the session adds those. `node_tp`
/// is the transparent proxy the agent announced, if any.
pub fn build(
    catalog: &Catalog,
    mesh: &str,
    name: &str,
    node_tp: Option<&pb::TransparentProxy>,
) -> Option<pb::ProxyConfig> {
    let stored = catalog.get(koguma_api::ResourceType::Dataplane, mesh, name)?;
    let net = stored.resource.as_dataplane()?.networking()?;
    let passthrough = catalog.mesh(mesh).is_none_or(|m| m.passthrough());
    let transparent_proxy = transparent::settings(node_tp, net, passthrough);
    let mtls = catalog
        .mesh(mesh)
        .and_then(|m| m.mtls_backend())
        .map(|b| pb::MeshTls {
            mode: match b.mode() {
                koguma_api::MtlsMode::Strict => pb::MtlsMode::Strict,
                koguma_api::MtlsMode::Permissive => pb::MtlsMode::Permissive,
            }
            .into(),
            peer_uri_prefix: format!("spiffe://{mesh}/"),
            ..Default::default()
        });
    let inbounds = net
        .inbound
        .iter()
        .map(|i| {
            let address = i.listen_address(net).to_string();
            let (service_address, service_port) = i.service_target(net);
            pb::InboundListener {
                name: format!("inbound:{address}:{}", i.port),
                address,
                port: i.port,
                service_address: service_address.to_string(),
                service_port,
                protocol: protocol(i.protocol()).into(),
                service: i.service().to_string(),
                tags: i.tags.clone(),
                permissions: mtls
                    .as_ref()
                    .map(|_| permissions::for_inbound(catalog, mesh, &i.tags)),
            }
        })
        .collect();
    // One cluster per service, however many ports it is reached on.
    let outbounds_of = |service: &str, address: &str, ports: &[u32]| {
        let (endpoints, proto) = service_endpoints(catalog, mesh, service);
        let cluster = pb::Cluster {
            name: service.to_string(),
            lb_policy: pb::LbPolicy::RoundRobin.into(),
            endpoints,
            identity: if mtls.is_some() {
                format!("spiffe://{mesh}/{service}")
            } else {
                String::new()
            },
        };
        ports
            .iter()
            .map(|&port| pb::OutboundListener {
                name: format!("outbound:{address}:{port}"),
                address: address.to_string(),
                port,
                protocol: protocol(proto).into(),
                cluster: Some(cluster.clone()),
                service: service.to_string(),
                transparent: false,
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
            transparent::vip_outbounds(catalog, mesh, net, tp.ipv6, outbounds_of);
        outbounds.extend(vip_outbounds);
        dns_records = records;
    }
    Some(pb::ProxyConfig {
        mesh: mesh.to_string(),
        name: name.to_string(),
        inbounds,
        outbounds,
        mtls,
        transparent_proxy,
        dns_records,
    })
}

/// FNV-1a over the encoded config (maps are BTreeMaps: the encoding is
/// deterministic).
pub fn version(config: &pb::ProxyConfig) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in config.encode_to_vec() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Origin, StoredResource};
    use koguma_api::Resource;
    use std::sync::Arc;

    fn dp(
        name: &str,
        addr: &str,
        service: &str,
        protocol: &str,
        outbound: Option<&str>,
    ) -> Arc<StoredResource> {
        let mut v = serde_json::json!({
            "type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": addr, "inbound": [
                {"port": 8080, "servicePort": 18080, "tags": {"kuma.io/service": service, "kuma.io/protocol": protocol}}
            ]}
        });
        if let Some(o) = outbound {
            v["networking"]["outbound"] =
                serde_json::json!([{"port": 10001, "tags": {"kuma.io/service": o}}]);
        }
        Arc::new(StoredResource {
            resource: Resource::from_value(v).unwrap(),
            origin: Origin::Api,
        })
    }

    fn catalog(dps: Vec<Arc<StoredResource>>) -> Catalog {
        let mut c = Catalog::default();
        for d in dps {
            let key = (
                koguma_api::ResourceType::Dataplane,
                "default".to_string(),
                d.resource.meta.name.clone(),
            );
            c.resources.insert(key, d);
        }
        c
    }

    #[test]
    fn outbound_gets_ready_endpoints_and_protocol() {
        let mut c = catalog(vec![
            dp("web", "127.0.0.2", "web", "http", Some("backend")),
            dp("b1", "127.0.0.3", "backend", "http", None),
            dp("b2", "127.0.0.4", "backend", "http", None),
        ]);
        let cfg = build(&c, "default", "web", None).unwrap();
        let out = &cfg.outbounds[0];
        assert_eq!(out.name, "outbound:127.0.0.1:10001");
        assert_eq!(out.protocol, pb::Protocol::Http as i32);
        let eps = &out.cluster.as_ref().unwrap().endpoints;
        assert_eq!(
            eps.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(),
            ["127.0.0.3", "127.0.0.4"]
        );
        assert_eq!(cfg.inbounds[0].service_port, 18080);

        let v1 = version(&cfg);
        assert_eq!(v1, version(&build(&c, "default", "web", None).unwrap()));
        c.draining.insert(("default".into(), "b2".into()));
        let cfg2 = build(&c, "default", "web", None).unwrap();
        assert_eq!(
            cfg2.outbounds[0].cluster.as_ref().unwrap().endpoints.len(),
            1
        );
        assert_ne!(v1, version(&cfg2));
        // With every endpoint gone the service is still HTTP.
        c.draining.insert(("default".into(), "b1".into()));
        let cfg3 = build(&c, "default", "web", None).unwrap();
        assert!(
            cfg3.outbounds[0]
                .cluster
                .as_ref()
                .unwrap()
                .endpoints
                .is_empty()
        );
        assert_eq!(cfg3.outbounds[0].protocol, pb::Protocol::Http as i32);
    }

    #[test]
    fn mixed_protocols_fall_back_to_tcp() {
        let c = catalog(vec![
            dp("web", "127.0.0.2", "web", "http", Some("backend")),
            dp("b1", "127.0.0.3", "backend", "http", None),
            dp("b2", "127.0.0.4", "backend", "grpc", None),
        ]);
        let cfg = build(&c, "default", "web", None).unwrap();
        assert_eq!(cfg.outbounds[0].protocol, pb::Protocol::Tcp as i32);
    }

    #[test]
    fn transparent_proxy_gets_vip_outbounds_and_names() {
        let mut c = catalog(vec![
            dp("web", "127.0.0.2", "web", "http", None),
            dp("b1", "127.0.0.3", "backend_v1", "http", None),
        ]);
        let web = Arc::make_mut(
            c.resources
                .values_mut()
                .find(|r| r.resource.meta.name == "web")
                .unwrap(),
        );
        let mut v = web.resource.to_value();
        v["networking"]["transparentProxying"] =
            serde_json::json!({"redirectPortInbound": 15006, "redirectPortOutbound": 15001});
        web.resource = Resource::from_value(v).unwrap();
        let mut vips = crate::vips::VipMap::new();
        crate::vips::allocate(&mut vips, ["backend_v1", "web"]).unwrap();
        c.vips.insert("default".into(), Arc::new(vips));

        let cfg = build(&c, "default", "web", None).unwrap();
        let tp = cfg.transparent_proxy.as_ref().unwrap();
        assert_eq!(
            (
                tp.redirect_port_inbound,
                tp.redirect_port_outbound,
                tp.passthrough
            ),
            (15006, 15001, true)
        );
        let names: Vec<_> = cfg
            .outbounds
            .iter()
            .map(|o| (o.name.as_str(), o.service.as_str(), o.transparent))
            .collect();
        assert_eq!(
            names,
            [
                ("outbound:240.0.0.0:80", "backend_v1", true),
                ("outbound:240.0.0.0:8080", "backend_v1", true),
                ("outbound:240.0.0.1:80", "web", true),
                ("outbound:240.0.0.1:8080", "web", true),
            ]
        );
        let eps = &cfg.outbounds[0].cluster.as_ref().unwrap().endpoints;
        assert_eq!(eps[0].address, "127.0.0.3");
        let dns: Vec<_> = cfg
            .dns_records
            .iter()
            .map(|r| (r.name.as_str(), r.ips.join(",")))
            .collect();
        assert_eq!(
            dns,
            [
                ("backend.v1.mesh", "240.0.0.0,::ffff:240.0.0.0".to_string()),
                ("backend_v1.mesh", "240.0.0.0,::ffff:240.0.0.0".to_string()),
                ("web.mesh", "240.0.0.1,::ffff:240.0.0.1".to_string()),
            ]
        );
        // Without transparent proxying: no names, no VIP listeners.
        let b1 = build(&c, "default", "b1", None).unwrap();
        assert!(
            b1.transparent_proxy.is_none() && b1.dns_records.is_empty() && b1.outbounds.is_empty()
        );
        // An agent that announces it gets it all the same.
        let announced = pb::TransparentProxy {
            redirect_port_inbound: 0,
            redirect_port_outbound: 0,
            ipv6: false,
            passthrough: false,
        };
        let b1 = build(&c, "default", "b1", Some(&announced)).unwrap();
        assert_eq!(b1.transparent_proxy.unwrap().redirect_port_outbound, 15001);
        assert_eq!(b1.dns_records[0].ips, ["240.0.0.0"]);
    }
}
