//! From the wire config to the forwarder's typed config. Anything the agent
//! cannot run is refused here with the listener and field it concerns; the
//! message goes back to the CP in the NACK.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use koguma_forwarder as fwd;
use koguma_proto::v1 as pb;

use crate::identity::WorkloadKeys;

fn protocol(p: i32, listener: &str) -> Result<fwd::Protocol, String> {
    koguma_proto::protocol(p)
        .ok_or_else(|| format!("{listener}: protocol {p} is not supported by this agent"))
}

fn socket(address: &str, port: u32, what: &str, listener: &str) -> Result<SocketAddr, String> {
    let ip: IpAddr = address
        .parse()
        .map_err(|_| format!("{listener}: {what} address {address:?} is not an IP address"))?;
    Ok(SocketAddr::new(ip, port_number(port, what, listener)?))
}

fn port_number(port: u32, what: &str, listener: &str) -> Result<u16, String> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{listener}: {what} port {port} is not in 1..65535"))
}

fn permissions(p: Option<&pb::Permissions>) -> Vec<fwd::PermissionRule> {
    p.into_iter()
        .flat_map(|p| &p.rules)
        .map(|r| fwd::PermissionRule {
            // An action this agent does not know denies: fail closed.
            action: koguma_proto::permission_action(r.action)
                .unwrap_or(fwd::PermissionAction::Deny),
            required_uris: r.required_uris.clone(),
            policy: r.policy.clone(),
            uri_prefix: Some(r.uri_prefix.clone()).filter(|p| !p.is_empty()),
            sni: Some(r.sni.clone()).filter(|s| !s.is_empty()),
        })
        .collect()
}

fn mesh_tls(m: &pb::MeshTls, keys: &WorkloadKeys) -> Result<fwd::MeshTlsConfig, String> {
    let leaf = m
        .cert_chain
        .first()
        .ok_or("mesh mTLS is on but the control plane sent no certificate for this dataplane")?;
    let key = keys.key_for(leaf).ok_or(
        "mesh mTLS: the certificate sent is not for a key this agent generated (an older CSR?)",
    )?;
    let mode = koguma_proto::mtls_mode(m.mode)
        .ok_or_else(|| format!("mesh mTLS mode {} is not supported by this agent", m.mode))?;
    Ok(fwd::MeshTlsConfig {
        mode,
        ca_certs: m.ca_certs.clone(),
        cert_chain: m.cert_chain.clone(),
        key,
        peer_uri_prefix: m.peer_uri_prefix.clone(),
    })
}

fn transparent(tp: &pb::TransparentProxy) -> Result<fwd::TransparentConfig, String> {
    let what = "transparent proxy";
    Ok(fwd::TransparentConfig {
        inbound_port: port_number(tp.redirect_port_inbound, "inbound redirect", what)?,
        outbound_port: port_number(tp.redirect_port_outbound, "outbound redirect", what)?,
        ipv6: tp.ipv6,
        passthrough: tp.passthrough,
    })
}

pub fn endpoints(
    cluster: &pb::Cluster,
    listener: &str,
) -> Result<Vec<fwd::EndpointConfig>, String> {
    cluster
        .endpoints
        .iter()
        .map(|e| {
            Ok(fwd::EndpointConfig {
                addr: socket(&e.address, e.port, "endpoint", listener)?,
                weight: e.weight,
                priority: e.priority,
            })
        })
        .collect()
}

fn terminate(t: &pb::TerminateMesh, route: &str) -> Result<fwd::TerminateConfig, String> {
    let port = port_number(
        t.upstream_port,
        "upstream",
        &format!("zone proxy route {route:?}"),
    )?;
    if t.upstream_host.is_empty() {
        return Err(format!("zone proxy route {route:?}: no upstream host"));
    }
    let non_empty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    Ok(fwd::TerminateConfig {
        mesh: t.mesh.clone(),
        permissions: permissions(t.permissions.as_ref()),
        host: t.upstream_host.clone(),
        port,
        tls: t.upstream_tls.as_ref().map(|u| fwd::UpstreamTlsConfig {
            ca_pem: non_empty(&u.ca_cert_pem),
            server_name: u.server_name.clone(),
            skip_hostname_verification: u.skip_hostname_verification,
            client_cert_pem: non_empty(&u.client_cert_pem),
            client_key_pem: non_empty(&u.client_key_pem).map(|k| fwd::PrivateKey(k.into_bytes())),
        }),
    })
}

fn zone_proxy(
    zp: &pb::ZoneProxy,
    clusters: &HashMap<&str, &pb::Cluster>,
    keys: &WorkloadKeys,
) -> Result<fwd::ZoneProxyConfig, String> {
    let name = "zone proxy";
    let mut routes = Vec::with_capacity(zp.routes.len());
    for r in &zp.routes {
        let cluster = clusters
            .get(r.cluster.as_str())
            .ok_or_else(|| format!("{name}: cluster {:?} is not in the config", r.cluster))?;
        routes.push(fwd::SniRouteConfig {
            sni: r.sni.clone(),
            cluster: r.cluster.clone(),
            endpoints: endpoints(cluster, name)?,
            terminate: r
                .terminate
                .as_ref()
                .map(|t| terminate(t, &r.sni))
                .transpose()?,
        });
    }
    let mut identities = Vec::with_capacity(zp.mesh_tls.len());
    for m in &zp.mesh_tls {
        let tls = m
            .tls
            .as_ref()
            .ok_or_else(|| format!("{name}: mesh {:?} has no mTLS settings", m.mesh))?;
        let cfg = mesh_tls(tls, keys).map_err(|e| format!("{name}, mesh {:?}: {e}", m.mesh))?;
        identities.push((m.mesh.clone(), cfg));
    }
    Ok(fwd::ZoneProxyConfig {
        listen: socket(&zp.address, zp.port, "listen", name)?,
        routes,
        mesh_tls: identities,
    })
}

pub fn proxy_config(
    config: &pb::ProxyConfig,
    keys: &WorkloadKeys,
) -> Result<fwd::ProxyConfig, String> {
    let mut out = fwd::ProxyConfig::default();
    if let Some(m) = &config.mtls {
        out.mtls = Some(mesh_tls(m, keys)?);
    }
    if let Some(tp) = &config.transparent_proxy {
        out.transparent = Some(transparent(tp)?);
    }
    for i in &config.inbounds {
        let policy = crate::cluster_policy::with_defaults(
            i.policy.as_ref(),
            out.inbound_timeouts,
            &out.resilience,
            &i.name,
        )?;
        out.inbounds.push(fwd::InboundConfig {
            timeouts: policy.timeouts,
            limits: policy.resilience.limits,
            name: i.name.clone(),
            listen: socket(&i.address, i.port, "listen", &i.name)?,
            service: i.service.clone(),
            upstream: socket(&i.service_address, i.service_port, "service", &i.name)?,
            protocol: protocol(i.protocol, &i.name)?,
            permissions: permissions(i.permissions.as_ref()),
            traffic: crate::listener_traffic::listener_traffic(
                i.listener_policy.as_ref(),
                &i.name,
            )?,
        });
    }
    let clusters: HashMap<&str, &pb::Cluster> = config
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    if let Some(zp) = &config.zone_proxy {
        out.zone_proxy = Some(zone_proxy(zp, &clusters, keys)?);
    }
    let resolver = crate::route_config::Clusters {
        by_name: clusters,
        timeouts: out.outbound_timeouts,
        resilience: &out.resilience,
    };
    let mut outbounds = Vec::with_capacity(config.outbounds.len());
    for o in &config.outbounds {
        outbounds.push(fwd::OutboundConfig {
            name: o.name.clone(),
            listen: socket(&o.address, o.port, "listen", &o.name)?,
            service: o.service.clone(),
            protocol: protocol(o.protocol, &o.name)?,
            cluster: resolver.resolve(&o.cluster, &o.name)?,
            http_routes: resolver.http_routes(&o.http_routes, &o.name)?,
            tcp_backends: resolver.backends(&o.tcp_backends, &o.name)?,
            transparent: o.transparent,
            traffic: crate::listener_traffic::listener_traffic(
                o.listener_policy.as_ref(),
                &o.name,
            )?,
        });
    }
    out.outbounds = outbounds;
    out.passthrough_access_logs =
        crate::listener_traffic::access_logs(&config.passthrough_access_logs, "passthrough")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_addresses_are_refused_with_the_listener_named() {
        let cfg = pb::ProxyConfig {
            outbounds: vec![pb::OutboundListener {
                name: "outbound:127.0.0.1:10001".into(),
                address: "127.0.0.1".into(),
                port: 10001,
                cluster: "backend".into(),
                ..Default::default()
            }],
            clusters: vec![pb::Cluster {
                name: "backend".into(),
                endpoints: vec![pb::Endpoint {
                    address: "backend.local".into(),
                    port: 80,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let keys = WorkloadKeys::new().unwrap();
        let err = proxy_config(&cfg, &keys).unwrap_err();
        assert_eq!(
            err,
            "outbound:127.0.0.1:10001: endpoint address \"backend.local\" is not an IP address"
        );
        let mut missing = cfg.clone();
        missing.clusters.clear();
        assert_eq!(
            proxy_config(&missing, &keys).unwrap_err(),
            "outbound:127.0.0.1:10001: cluster \"backend\" is not in the config"
        );
    }
}
