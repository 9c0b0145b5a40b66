//! Multi-zone resources: `Zone` (one per zone CP that ever connected to the
//! global), `ZoneIngress` and `ZoneEgress` (Kuma 2.x Universal zone
//! proxies). A zone CP fills in `zone` and a ZoneIngress's
//! `availableServices`; people give the networking.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dataplane::{check_ip, check_port, is_dns_name};
use crate::registry::SpecType;
use crate::tags::{TagRules, validate_tags};
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneSpec {
    /// A disabled zone's resources stay on the global but other zones stop
    /// routing to it. Kuma's default: enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl ZoneSpec {
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

impl SpecType for ZoneSpec {
    fn validate(&self, _errs: &mut ValidationError) {}
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneIngressSpec {
    /// Set by the zone CP that stores it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    #[serde(default)]
    pub networking: ZoneIngressNetworking,
    /// Computed by the zone CP: what other zones can reach through here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub available_services: Vec<AvailableService>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneIngressNetworking {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub advertised_address: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub advertised_port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<crate::Admin>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One tag set of one mesh that has instances in the ingress's zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AvailableService {
    #[serde(default)]
    pub mesh: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub instances: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external_service: bool,
}

impl ZoneIngressSpec {
    /// Other zones route only through an ingress that says where it can be
    /// reached from outside its zone (Kuma's `HasPublicAddress`).
    pub fn public_address(&self) -> Option<(&str, u32)> {
        let n = &self.networking;
        (!n.advertised_address.is_empty() && n.advertised_port != 0)
            .then_some((n.advertised_address.as_str(), n.advertised_port))
    }
}

fn check_address(field: &str, addr: &str, errs: &mut ValidationError) {
    if addr.parse::<std::net::IpAddr>().is_err() && !is_dns_name(addr) {
        errs.add(
            field,
            format!("{addr:?} has to be a valid IP address or domain name"),
        );
    }
}

fn check_admin(admin: Option<&crate::Admin>, port: u32, errs: &mut ValidationError) {
    if let Some(admin) = admin {
        check_port("networking.admin.port".into(), admin.port, errs);
        if admin.port == port {
            errs.add("networking.admin.port", "must differ from port");
        }
    }
}

impl SpecType for ZoneIngressSpec {
    fn validate(&self, errs: &mut ValidationError) {
        let n = &self.networking;
        check_admin(n.admin.as_ref(), n.port, errs);
        if n.advertised_address.is_empty() && n.advertised_port != 0 {
            errs.add(
                "networking.advertisedAddress",
                "has to be defined with advertisedPort",
            );
        }
        if n.advertised_port == 0 && !n.advertised_address.is_empty() {
            errs.add(
                "networking.advertisedPort",
                "has to be defined with advertisedAddress",
            );
        }
        if !n.address.is_empty() {
            check_address("networking.address", &n.address, errs);
        }
        if !n.advertised_address.is_empty() {
            check_address("networking.advertisedAddress", &n.advertised_address, errs);
        }
        check_port("networking.port".into(), n.port, errs);
        if n.advertised_port != 0 {
            check_port("networking.advertisedPort".into(), n.advertised_port, errs);
        }
        for (i, s) in self.available_services.iter().enumerate() {
            validate_tags(
                &format!("availableServices[{i}].tags"),
                &s.tags,
                TagRules {
                    require_service: true,
                    check_protocol: true,
                    selector: false,
                },
                errs,
            );
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneEgressSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    #[serde(default)]
    pub networking: ZoneEgressNetworking,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneEgressNetworking {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<crate::Admin>,
}

impl SpecType for ZoneEgressSpec {
    fn validate(&self, errs: &mut ValidationError) {
        let n = &self.networking;
        check_admin(n.admin.as_ref(), n.port, errs);
        if !n.address.is_empty() {
            check_ip("networking.address".into(), &n.address, errs);
        }
        check_port("networking.port".into(), n.port, errs);
    }
}

#[cfg(test)]
mod tests {
    use crate::Resource;
    use serde_json::json;

    fn violations(v: serde_json::Value) -> Vec<String> {
        match Resource::from_value(v).and_then(|r| r.validate()) {
            Ok(()) => vec![],
            Err(e) => e
                .violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.message))
                .collect(),
        }
    }

    #[test]
    fn zone_ingress_needs_advertised_address_and_port_together() {
        let errs = violations(json!({"type": "ZoneIngress", "name": "zi",
            "networking": {"address": "127.0.0.1", "port": 10001, "advertisedPort": 10001}}));
        assert_eq!(
            errs,
            ["networking.advertisedAddress: has to be defined with advertisedPort"]
        );
        let errs = violations(json!({"type": "ZoneIngress", "name": "zi",
            "networking": {"address": "127.0.0.1", "port": 0, "admin": {"port": 0}}}));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("networking.port: port must be in the range [1, 65535]")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e == "networking.admin.port: must differ from port"),
            "{errs:?}"
        );
    }

    #[test]
    fn zone_ingress_round_trips_with_available_services() {
        let v = json!({"type": "ZoneIngress", "name": "zi", "zone": "zone-1",
            "networking": {"address": "10.0.0.1", "advertisedAddress": "192.0.2.1", "port": 10001, "advertisedPort": 10001},
            "availableServices": [{"mesh": "default", "tags": {"kuma.io/service": "backend"}, "instances": 2}]});
        let r = Resource::from_value(v.clone()).unwrap();
        r.validate().unwrap();
        assert_eq!(r.to_value(), v);
    }

    #[test]
    fn zone_egress_address_must_be_an_ip() {
        let errs = violations(json!({"type": "ZoneEgress", "name": "ze",
            "networking": {"address": "not an ip", "port": 10002}}));
        assert_eq!(
            errs,
            ["networking.address: \"not an ip\" has to be a valid IP address"]
        );
    }
}
