//! A proxy config as JSON, for people: the CP's `_config` endpoint and the
//! agent's `/config_dump` show the same shape.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::v1::{Cluster, Permissions, ProxyConfig};

fn protocol(p: i32) -> &'static str {
    crate::protocol(p).map_or("tcp", koguma_types::Protocol::as_str)
}

fn permissions(p: Option<&Permissions>) -> Value {
    let Some(p) = p else { return Value::Null };
    p.rules
        .iter()
        .map(|r| {
            // As the agent enforces it: an action it does not know denies.
            let action = crate::permission_action(r.action)
                .map_or("Deny", koguma_types::PermissionAction::as_str);
            json!({"action": action, "requiredUris": r.required_uris, "policy": r.policy})
        })
        .collect()
}

pub fn proxy_config(config: &ProxyConfig) -> Value {
    let inbounds: Vec<Value> = config
        .inbounds
        .iter()
        .map(|i| {
            json!({
                "name": i.name,
                "address": i.address,
                "port": i.port,
                "serviceAddress": i.service_address,
                "servicePort": i.service_port,
                "protocol": protocol(i.protocol),
                "service": i.service,
                "tags": i.tags,
                "permissions": permissions(i.permissions.as_ref()),
            })
        })
        .collect();
    let endpoints = |c: &Cluster| -> Vec<Value> {
        c.endpoints
            .iter()
            .map(|e| json!({"address": e.address, "port": e.port, "weight": e.weight, "priority": e.priority, "zone": e.zone, "tags": e.tags}))
            .collect()
    };
    let clusters: BTreeMap<&str, &Cluster> = config
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let outbounds: Vec<Value> = config
        .outbounds
        .iter()
        .map(|o| {
            let cluster = clusters.get(o.cluster.as_str());
            json!({
                "name": o.name,
                "address": o.address,
                "port": o.port,
                "service": o.service,
                "protocol": protocol(o.protocol),
                "cluster": o.cluster,
                // The cluster's, repeated here for people reading one listener.
                "endpoints": cluster.map(|c| endpoints(c)).unwrap_or_default(),
                "identity": cluster.map(|c| c.identity.as_str()).filter(|i| !i.is_empty()),
                "transparent": o.transparent,
            })
        })
        .collect();
    let cluster_list: Vec<Value> = config
        .clusters
        .iter()
        .map(|c| json!({"name": c.name, "identity": c.identity, "sni": c.sni, "endpoints": endpoints(c)}))
        .collect();
    // Certificates are shown by count: /certs on the agent describes them.
    let mtls = config.mtls.as_ref().map(|m| {
        let mode = crate::mtls_mode(m.mode).unwrap_or_default().as_str();
        json!({"mode": mode, "peerUriPrefix": m.peer_uri_prefix, "caCerts": m.ca_certs.len(), "certChain": m.cert_chain.len()})
    });
    let tp = config.transparent_proxy.as_ref().map(|t| {
        json!({"redirectPortInbound": t.redirect_port_inbound, "redirectPortOutbound": t.redirect_port_outbound, "ipv6": t.ipv6, "passthrough": t.passthrough})
    });
    let dns: Vec<Value> = config
        .dns_records
        .iter()
        .map(|r| json!({"name": r.name, "ips": r.ips}))
        .collect();
    let zone_proxy = config.zone_proxy.as_ref().map(|z| {
        let routes: Vec<Value> = z
            .routes
            .iter()
            .map(|r| json!({"sni": r.sni, "cluster": r.cluster, "terminate": r.terminate.as_ref().map(|t| t.mesh.as_str())}))
            .collect();
        json!({"address": z.address, "port": z.port, "routes": routes})
    });
    json!({"mesh": config.mesh, "name": config.name, "mtls": mtls, "transparentProxy": tp, "inbounds": inbounds, "outbounds": outbounds, "clusters": cluster_list, "dnsRecords": dns, "zoneProxy": zone_proxy})
}
