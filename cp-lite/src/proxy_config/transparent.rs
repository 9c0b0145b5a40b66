//! What a dataplane under transparent proxying gets on top of its declared
//! listeners: an outbound at every service VIP (port 80, and each port the
//! service's inbounds use), and the `.mesh` names for its DNS server.

use std::collections::BTreeSet;

use koguma_api::{Networking, TransparentProxying};
use koguma_proto::v1 as pb;

use super::index::MeshContext;
use crate::vips;

/// Kuma's `serviceVipPort`: `http://backend.mesh` works whatever port the
/// backend listens on.
const SERVICE_VIP_PORT: u32 = 80;

/// The transparent proxy in force: on when the agent announced it
/// (`--transparent-proxy`) or the Dataplane has `transparentProxying`.
/// Ports the agent names win, then the Dataplane's, then Kuma's defaults.
/// `None`: not transparently proxied.
pub fn settings(
    node: Option<&pb::TransparentProxy>,
    net: &Networking,
    passthrough: bool,
) -> Option<pb::TransparentProxy> {
    let dp = net.transparent_proxying.as_ref();
    if node.is_none() && dp.is_none() {
        return None;
    }
    let port = |announced: Option<u32>, declared: fn(&TransparentProxying) -> u16, default: u16| {
        announced
            .filter(|p| *p != 0)
            .unwrap_or_else(|| u32::from(dp.map_or(default, declared)))
    };
    Some(pb::TransparentProxy {
        redirect_port_inbound: port(
            node.map(|n| n.redirect_port_inbound),
            TransparentProxying::inbound_port,
            TransparentProxying::DEFAULT_INBOUND_PORT,
        ),
        redirect_port_outbound: port(
            node.map(|n| n.redirect_port_outbound),
            TransparentProxying::outbound_port,
            TransparentProxying::DEFAULT_OUTBOUND_PORT,
        ),
        ipv6: dp.map_or_else(|| node.is_some_and(|n| n.ipv6), TransparentProxying::ipv6),
        passthrough,
    })
}

/// The VIP outbounds (built by `outbounds`, given service, address and
/// ports) and DNS records for the `reachable` services of the mesh.
pub fn vip_outbounds(
    ctx: &MeshContext,
    reachable: &BTreeSet<String>,
    ipv6: bool,
    outbounds: impl Fn(&str, &str, &[u32]) -> Vec<pb::OutboundListener>,
) -> (Vec<pb::OutboundListener>, Vec<pb::DnsRecord>) {
    let Some(map) = &ctx.vips else {
        return (Vec::new(), Vec::new());
    };
    let mut listeners = Vec::new();
    let mut records = Vec::new();
    for service in reachable {
        let (Some(vip), Some(entry)) = (map.get(service), ctx.services.get(service)) else {
            continue;
        };
        let ports: BTreeSet<u32> = entry
            .ports
            .iter()
            .copied()
            .chain([SERVICE_VIP_PORT])
            .collect();
        let ports: Vec<u32> = ports.into_iter().collect();
        for mut l in outbounds(service, &vip.to_string(), &ports) {
            l.transparent = true;
            listeners.push(l);
        }
        let mut ips = vec![vip.to_string()];
        if ipv6 {
            ips.push(vip.to_ipv6_mapped().to_string());
        }
        for name in vips::dns_names(service) {
            records.push(pb::DnsRecord {
                name,
                ips: ips.clone(),
            });
        }
    }
    records.sort_by(|a, b| a.name.cmp(&b.name));
    (listeners, records)
}
