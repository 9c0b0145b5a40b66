//! Virtual IPs for `kuma.io/service` names, as Kuma's legacy VIP allocator
//! hands them out: one per service and mesh from 240.0.0.0/4, lowest free
//! address first. A service keeps its VIP for as long as its mesh exists
//! (DNS caches and long-lived connections hold on to them), across CP
//! restarts: the map is stored beside the mesh's secrets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// service name → VIP.
pub type VipMap = BTreeMap<String, Ipv4Addr>;

const CIDR_BASE: u32 = 0xF000_0000; // 240.0.0.0
const CIDR_SIZE: u32 = 1 << 28; // /4

/// Where a mesh's map is stored; Kuma names its Config resource the same.
pub fn record_name(mesh: &str) -> String {
    format!("kuma-{mesh}-dns-vips")
}

pub fn parse(json: &str) -> Result<VipMap, String> {
    let map: VipMap = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if let Some((s, ip)) = map.iter().find(|(_, ip)| !in_cidr(**ip)) {
        return Err(format!("VIP {ip} of {s:?} is outside 240.0.0.0/4"));
    }
    Ok(map)
}

pub fn render(map: &VipMap) -> String {
    serde_json::to_string(map).unwrap_or_default()
}

fn in_cidr(ip: Ipv4Addr) -> bool {
    u32::from(ip).wrapping_sub(CIDR_BASE) < CIDR_SIZE
}

#[derive(Debug, thiserror::Error)]
#[error("no free VIP left in 240.0.0.0/4 for service {service:?}")]
pub struct Exhausted {
    pub service: String,
}

/// Gives every service of `services` that has none a VIP: the lowest free
/// address, in the order given. Returns whether the map changed.
pub fn allocate<'a>(
    map: &mut VipMap,
    services: impl IntoIterator<Item = &'a str>,
) -> Result<bool, Exhausted> {
    let mut used: BTreeSet<u32> = map.values().map(|ip| u32::from(*ip)).collect();
    let mut next = CIDR_BASE;
    let mut changed = false;
    for service in services {
        if service.is_empty() || map.contains_key(service) {
            continue;
        }
        while used.contains(&next) {
            next += 1;
        }
        if next - CIDR_BASE >= CIDR_SIZE {
            return Err(Exhausted {
                service: service.to_string(),
            });
        }
        used.insert(next);
        map.insert(service.to_string(), Ipv4Addr::from(next));
        changed = true;
    }
    Ok(changed)
}

/// The names a service answers to: `<service>.mesh`, and when the name has
/// `_`, also the variant with `.` in its place (Kuma's
/// `backend_kuma-demo_svc_8080.mesh` and `backend.kuma-demo.svc.8080.mesh`).
pub fn dns_names(service: &str) -> Vec<String> {
    let mut names = vec![format!("{service}.mesh")];
    if service.contains('_') {
        names.push(format!("{}.mesh", service.replace('_', ".")));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_first_and_stable() {
        let mut map = VipMap::new();
        assert!(allocate(&mut map, ["backend", "web"]).unwrap());
        assert_eq!(map["backend"], Ipv4Addr::new(240, 0, 0, 0));
        assert_eq!(map["web"], Ipv4Addr::new(240, 0, 0, 1));
        // A gap (a VIP given back by hand) is filled first; existing ones stay.
        map.remove("backend");
        assert!(!allocate(&mut map, ["web"]).unwrap());
        assert!(allocate(&mut map, ["db", "web", "cache"]).unwrap());
        assert_eq!(map["db"], Ipv4Addr::new(240, 0, 0, 0));
        assert_eq!(map["cache"], Ipv4Addr::new(240, 0, 0, 2));
        assert_eq!(map["web"], Ipv4Addr::new(240, 0, 0, 1));
        let again = parse(&render(&map)).unwrap();
        assert_eq!(again, map);
    }

    #[test]
    fn foreign_addresses_are_refused_when_loaded() {
        let err = parse(r#"{"web":"10.0.0.1"}"#).unwrap_err();
        assert_eq!(err, "VIP 10.0.0.1 of \"web\" is outside 240.0.0.0/4");
        assert!(in_cidr(Ipv4Addr::new(255, 255, 255, 255)));
    }

    #[test]
    fn names() {
        assert_eq!(dns_names("backend"), ["backend.mesh"]);
        assert_eq!(
            dns_names("backend_v1"),
            ["backend_v1.mesh", "backend.v1.mesh"]
        );
    }
}
