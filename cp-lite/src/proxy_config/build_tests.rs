//! What a dataplane is sent, for catalogs a person would write.

use std::sync::Arc;

use koguma_proto::v1 as pb;
use serde_json::json;

use super::test_catalog::{catalog, compute, dataplane, permission, stored, transparent};
use super::{ConfigSnapshot, DataplaneView, Refresh};
use crate::catalog::Catalog;
use koguma_proto::version;

/// The cluster an outbound sends to.
fn cluster(cfg: &pb::ProxyConfig, outbound: usize) -> &pb::Cluster {
    let name = &cfg.outbounds[outbound].cluster;
    cfg.clusters
        .iter()
        .find(|c| &c.name == name)
        .expect("the outbound's cluster is in the config")
}

fn vip_services(cfg: &pb::ProxyConfig) -> Vec<&str> {
    let mut s: Vec<&str> = cfg
        .outbounds
        .iter()
        .filter(|o| o.transparent)
        .map(|o| o.service.as_str())
        .collect();
    s.dedup();
    s
}

fn names(cfg: &pb::ProxyConfig) -> Vec<&str> {
    cfg.dns_records.iter().map(|r| r.name.as_str()).collect()
}

/// web calls backend, whose two instances speak http and `second`.
fn web_and_two_backends(second: &str) -> Catalog {
    catalog(
        false,
        vec![
            stored(dataplane(
                "web",
                "127.0.0.2",
                "web",
                "http",
                Some("backend"),
            )),
            stored(dataplane("b1", "127.0.0.3", "backend", "http", None)),
            stored(dataplane("b2", "127.0.0.4", "backend", second, None)),
        ],
    )
}

#[test]
fn outbound_gets_ready_endpoints_and_protocol() {
    let mut c = web_and_two_backends("http");
    let cfg = compute(&c, "web");
    let out = &cfg.outbounds[0];
    assert_eq!(out.name, "outbound:127.0.0.1:10001");
    assert_eq!(out.protocol, pb::Protocol::Http as i32);
    let eps = &cluster(&cfg, 0).endpoints;
    assert_eq!(
        eps.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(),
        ["127.0.0.3", "127.0.0.4"]
    );
    assert_eq!(cfg.inbounds[0].service_port, 18080);

    let v1 = version(&cfg);
    assert_eq!(v1, version(&compute(&c, "web")));
    c.draining.insert(("default".into(), "b2".into()));
    let cfg2 = compute(&c, "web");
    assert_eq!(cluster(&cfg2, 0).endpoints.len(), 1);
    assert_ne!(v1, version(&cfg2));
    // With every endpoint gone the service is still HTTP.
    c.draining.insert(("default".into(), "b1".into()));
    let cfg3 = compute(&c, "web");
    assert!(cluster(&cfg3, 0).endpoints.is_empty());
    assert_eq!(cfg3.outbounds[0].protocol, pb::Protocol::Http as i32);
}

#[test]
fn mixed_protocols_fall_back_to_tcp() {
    let c = web_and_two_backends("grpc");
    assert_eq!(
        compute(&c, "web").outbounds[0].protocol,
        pb::Protocol::Tcp as i32
    );
}

#[test]
fn transparent_proxy_gets_vip_outbounds_and_names() {
    let web = transparent(dataplane("web", "127.0.0.2", "web", "http", None), &[]);
    let c = catalog(
        false,
        vec![
            stored(dataplane("b1", "127.0.0.3", "backend_v1", "http", None)),
            stored(web),
        ],
    );
    let cfg = compute(&c, "web");
    let tp = cfg.transparent_proxy.as_ref().unwrap();
    assert_eq!(
        (
            tp.redirect_port_inbound,
            tp.redirect_port_outbound,
            tp.passthrough
        ),
        (15006, 15001, true)
    );
    let outbounds: Vec<_> = cfg
        .outbounds
        .iter()
        .map(|o| (o.name.as_str(), o.service.as_str(), o.transparent))
        .collect();
    assert_eq!(
        outbounds,
        [
            ("outbound:240.0.0.0:80", "backend_v1", true),
            ("outbound:240.0.0.0:8080", "backend_v1", true),
            ("outbound:240.0.0.1:80", "web", true),
            ("outbound:240.0.0.1:8080", "web", true),
        ]
    );
    assert_eq!(cluster(&cfg, 0).endpoints[0].address, "127.0.0.3");
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
    let snapshot = ConfigSnapshot::new(Arc::new(c));
    let b1 = snapshot.compute("default", "b1", None).unwrap();
    assert!(b1.transparent_proxy.is_none() && b1.dns_records.is_empty() && b1.outbounds.is_empty());
    // An agent that announces it gets it all the same.
    let announced = pb::TransparentProxy::default();
    let b1 = snapshot.compute("default", "b1", Some(&announced)).unwrap();
    assert_eq!(b1.transparent_proxy.unwrap().redirect_port_outbound, 15001);
    assert_eq!(b1.dns_records[0].ips, ["240.0.0.0"]);
}

fn trimming_catalog(reachable: &[&str]) -> Catalog {
    let web = transparent(
        dataplane("web", "127.0.0.2", "web", "http", Some("db")),
        reachable,
    );
    catalog(
        true,
        vec![
            stored(web),
            stored(dataplane("b1", "127.0.0.3", "backend", "http", None)),
            stored(dataplane("d1", "127.0.0.4", "db", "tcp", None)),
            stored(dataplane("o1", "127.0.0.5", "other", "http", None)),
            permission(
                "web-to-backend",
                json!({"kind": "MeshService", "name": "backend"}),
                json!([{"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"action": "Allow"}}]),
            ),
            permission(
                "no-web-to-other",
                json!({"kind": "Mesh"}),
                json!([{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}},
                       {"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"action": "Deny"}}]),
            ),
        ],
    )
}

#[test]
fn with_mtls_a_dataplane_gets_only_the_services_its_permissions_let_it_call() {
    let c = trimming_catalog(&[]);
    let cfg = compute(&c, "web");
    // backend: the MeshService policy's Allow for web wins over the Mesh
    // policy's Deny. db, other and web itself: the Mesh policy denies web.
    assert_eq!(vip_services(&cfg), ["backend"]);
    assert_eq!(names(&cfg), ["backend.mesh"]);
    // A declared outbound is kept whatever the permissions say.
    assert!(
        cfg.outbounds
            .iter()
            .any(|o| o.service == "db" && !o.transparent)
    );
}

#[test]
fn reachable_services_win_over_permissions() {
    let c = trimming_catalog(&["db", "other"]);
    let cfg = compute(&c, "web");
    assert_eq!(vip_services(&cfg), ["db", "other"]);
    assert_eq!(names(&cfg), ["db.mesh", "other.mesh"]);
}

#[test]
fn an_unrelated_change_rebuilds_nothing_and_a_permission_change_adds_the_service() {
    let mut c = trimming_catalog(&[]);
    let first = ConfigSnapshot::new(Arc::new(c.clone()));
    let mut view = DataplaneView::new("default", "web", None);
    assert!(matches!(view.refresh(&first), Refresh::Rebuilt));
    // Another instance of `other`, which web may not call.
    c.insert(stored(dataplane("o2", "127.0.0.6", "other", "http", None)));
    let second = first.next(Arc::new(c.clone()));
    assert!(matches!(view.refresh(&second), Refresh::Unchanged));
    // A new instance of backend, which web calls.
    c.insert(stored(dataplane(
        "b2",
        "127.0.0.7",
        "backend",
        "http",
        None,
    )));
    let third = second.next(Arc::new(c.clone()));
    assert!(matches!(view.refresh(&third), Refresh::Rebuilt));
    assert_eq!(view.config().unwrap().outbounds.len(), 3); // db, backend:80, backend:8080
    // Allowing web to call other adds it.
    c.insert(permission(
        "web-to-other",
        json!({"kind": "MeshService", "name": "other"}),
        json!([{"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"action": "Allow"}}]),
    ));
    let fourth = third.next(Arc::new(c.clone()));
    assert!(matches!(view.refresh(&fourth), Refresh::Rebuilt));
    assert_eq!(vip_services(view.config().unwrap()), ["backend", "other"]);
}
