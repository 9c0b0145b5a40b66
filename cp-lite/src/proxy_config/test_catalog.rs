//! Resources for the config tests, written as a person would write them.

use std::sync::Arc;

use koguma_api::Resource;
use serde_json::{Value, json};

use crate::catalog::Catalog;
use crate::store::{Origin, StoredResource};

pub fn stored(v: Value) -> Arc<StoredResource> {
    Arc::new(StoredResource {
        resource: Resource::from_value(v).expect("test resource parses"),
        origin: Origin::Api,
        version: 1,
    })
}

pub fn mesh(mtls: bool) -> Arc<StoredResource> {
    let mut v = json!({"type": "Mesh", "name": "default"});
    if mtls {
        v["mtls"] =
            json!({"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]});
    }
    stored(v)
}

pub fn dataplane(
    name: &str,
    addr: &str,
    service: &str,
    protocol: &str,
    outbound: Option<&str>,
) -> Value {
    let mut v = json!({
        "type": "Dataplane", "mesh": "default", "name": name,
        "networking": {"address": addr, "inbound": [
            {"port": 8080, "servicePort": 18080, "tags": {"kuma.io/service": service, "kuma.io/protocol": protocol}}
        ]}
    });
    if let Some(o) = outbound {
        v["networking"]["outbound"] = json!([{"port": 10001, "tags": {"kuma.io/service": o}}]);
    }
    v
}

pub fn transparent(mut dp: Value, reachable: &[&str]) -> Value {
    dp["networking"]["transparentProxying"] = json!({
        "redirectPortInbound": 15006, "redirectPortOutbound": 15001,
        "reachableServices": reachable,
    });
    dp
}

pub fn permission(name: &str, target: Value, from: Value) -> Arc<StoredResource> {
    stored(
        json!({"type": "MeshTrafficPermission", "mesh": "default", "name": name,
        "spec": {"targetRef": target, "from": from}}),
    )
}

/// A catalog with the `default` mesh and `resources`, every service given a VIP.
pub fn catalog(mtls: bool, resources: Vec<Arc<StoredResource>>) -> Catalog {
    let mut c = Catalog::default();
    c.insert(mesh(mtls));
    for r in resources {
        c.insert(r);
    }
    give_vips(&mut c);
    c
}

pub fn give_vips(c: &mut Catalog) {
    let mut map = c
        .vips
        .get("default")
        .map(|m| (**m).clone())
        .unwrap_or_default();
    let services: Vec<String> = c
        .services("default")
        .into_iter()
        .map(String::from)
        .collect();
    if crate::vips::allocate(&mut map, services.iter().map(String::as_str)).unwrap_or(false) {
        c.vips.insert("default".into(), Arc::new(map));
    }
}

/// The config dataplane `name` of the default mesh gets from `c`.
pub fn compute(c: &Catalog, name: &str) -> koguma_proto::v1::ProxyConfig {
    super::ConfigSnapshot::new(Arc::new(c.clone()))
        .compute("default", name, None)
        .expect("the dataplane exists")
}
