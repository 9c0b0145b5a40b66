//! What a sidecar and a zone proxy are sent across zones: weights, SNI,
//! locality priorities, the egress path, for catalogs a person would write.

use std::sync::Arc;

use koguma_proto::v1 as pb;
use serde_json::json;

use super::test_catalog::{compute, dataplane, mesh, stored};
use super::{ConfigSnapshot, ZoneProxyKind};
use crate::catalog::Catalog;
use crate::store::{Origin, StoredResource};

/// zone-b's ingress as zone-a holds it: synced, with `instances` of backend.
fn remote_ingress(zone: &str, addr: &str, instances: u32) -> Arc<StoredResource> {
    Arc::new(StoredResource {
        resource: koguma_api::Resource::from_value(json!({
            "type": "ZoneIngress", "name": format!("ingress-{zone}"), "zone": zone,
            "networking": {"address": addr, "port": 10001, "advertisedAddress": addr, "advertisedPort": 10001},
            "availableServices": [{"mesh": "default", "tags": {"kuma.io/service": "backend", "kuma.io/protocol": "http"}, "instances": instances}],
        }))
        .unwrap(),
        origin: Origin::Kds,
        version: 1,
    })
}

fn zone_a(mesh_json: serde_json::Value, extra: Vec<Arc<StoredResource>>) -> Catalog {
    let mut c = Catalog {
        zone: Some("zone-a".into()),
        ..Catalog::default()
    };
    c.insert(stored(mesh_json));
    for r in [
        stored(dataplane(
            "web",
            "127.0.0.2",
            "web",
            "http",
            Some("backend"),
        )),
        stored(dataplane("a1", "127.0.0.3", "backend", "http", None)),
        stored(dataplane("a2", "127.0.0.4", "backend", "http", None)),
    ]
    .into_iter()
    .chain(extra)
    {
        c.insert(r);
    }
    c
}

fn mtls_mesh(routing: serde_json::Value) -> serde_json::Value {
    let mut m = json!({"type": "Mesh", "name": "default"});
    m["mtls"] = mesh(true)
        .resource
        .as_mesh()
        .map(|s| json!(s.mtls))
        .unwrap();
    m["routing"] = routing;
    m
}

fn backend(c: &Catalog) -> pb::Cluster {
    compute(c, "web")
        .clusters
        .into_iter()
        .find(|c| c.name == "backend")
        .unwrap()
}

fn summary(c: &pb::Cluster) -> Vec<(String, u32, u32)> {
    c.endpoints
        .iter()
        .map(|e| (e.address.clone(), e.weight, e.priority))
        .collect()
}

#[test]
fn remote_ingresses_weigh_their_instances_and_locals_the_ingress_count() {
    let c = zone_a(
        mtls_mesh(json!({})),
        vec![
            remote_ingress("zone-b", "192.0.2.1", 3),
            remote_ingress("zone-c", "192.0.2.2", 1),
        ],
    );
    let cluster = backend(&c);
    assert_eq!(
        summary(&cluster),
        vec![
            ("127.0.0.3".into(), 2, 0),
            ("127.0.0.4".into(), 2, 0),
            ("192.0.2.1".into(), 3, 0),
            ("192.0.2.2".into(), 1, 0),
        ]
    );
    assert!(
        cluster.sni.ends_with(".backend.default.ks"),
        "{}",
        cluster.sni
    );
    assert_eq!(cluster.identity, "spiffe://default/backend");
    // Without mTLS nothing crosses zones.
    let plain = zone_a(
        json!({"type": "Mesh", "name": "default"}),
        vec![remote_ingress("zone-b", "192.0.2.1", 3)],
    );
    assert_eq!(backend(&plain).endpoints.len(), 2);
}

#[test]
fn locality_puts_other_zones_after_this_one_in_failover_order() {
    let flag = zone_a(
        mtls_mesh(json!({"localityAwareLoadBalancing": true})),
        vec![remote_ingress("zone-b", "192.0.2.1", 3)],
    );
    assert_eq!(summary(&backend(&flag))[2], ("192.0.2.1".into(), 3, 1));
    let policy = stored(json!({
        "type": "MeshLoadBalancingStrategy", "mesh": "default", "name": "lb",
        "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
            "default": {"localityAwareness": {"crossZone": {"failover": [
                {"to": {"type": "Only", "zones": ["zone-c"]}},
                {"to": {"type": "None"}}
            ]}}}}]}
    }));
    let ordered = zone_a(
        mtls_mesh(json!({})),
        vec![
            remote_ingress("zone-b", "192.0.2.1", 3),
            remote_ingress("zone-c", "192.0.2.2", 1),
            policy,
        ],
    );
    // zone-c next, zone-b never.
    assert_eq!(
        summary(&backend(&ordered)),
        vec![
            ("127.0.0.3".into(), 1, 0),
            ("127.0.0.4".into(), 1, 0),
            ("192.0.2.2".into(), 1, 1),
        ]
    );
}

#[test]
fn with_zone_egress_the_egress_stands_for_other_zones_and_routes_to_their_ingresses() {
    let egress = stored(json!({"type": "ZoneEgress", "name": "egress-a",
        "networking": {"address": "127.0.0.9", "port": 10002}}));
    let ingress_a = stored(json!({"type": "ZoneIngress", "name": "ingress-a",
        "networking": {"address": "127.0.0.8", "port": 10001}}));
    let c = zone_a(
        mtls_mesh(json!({"zoneEgress": true})),
        vec![remote_ingress("zone-b", "192.0.2.1", 3), egress, ingress_a],
    );
    let cluster = backend(&c);
    assert_eq!(
        summary(&cluster)[2..].to_vec(),
        vec![("127.0.0.9".to_string(), 1, 0)]
    );
    let snapshot = ConfigSnapshot::new(Arc::new(c));
    let egress_cfg = snapshot
        .compute_zone_proxy(ZoneProxyKind::Egress, "egress-a")
        .unwrap();
    let zp = egress_cfg.zone_proxy.as_ref().unwrap();
    assert_eq!(zp.routes.len(), 1);
    assert_eq!(zp.routes[0].sni, cluster.sni);
    assert_eq!(egress_cfg.clusters[0].name, "default:backend");
    assert_eq!(egress_cfg.clusters[0].endpoints[0].address, "192.0.2.1");
    // This zone's ingress offers this zone's instances only.
    let ingress_cfg = snapshot
        .compute_zone_proxy(ZoneProxyKind::Ingress, "ingress-a")
        .unwrap();
    let backend_route = ingress_cfg
        .clusters
        .iter()
        .find(|c| c.name == "default:backend")
        .unwrap();
    let addrs: Vec<&str> = backend_route
        .endpoints
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(addrs, vec!["127.0.0.3", "127.0.0.4"]);
}
