//! The `Dataplane` resource (Kuma 2.x, Universal) and its validation.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::registry::SpecType;
use crate::tags::{self, Protocol, TagRules, validate_tags};
use crate::validation::ValidationError;

/// Envoy's (and so Kuma's) default admin port.
pub const DEFAULT_ADMIN_PORT: u16 = 9901;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<Inbound>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<Outbound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparent_proxying: Option<TransparentProxying>,
}

/// Kuma's `networking.transparentProxying`: the rules installed by
/// `koguma-dp install transparent-proxy` redirect to these ports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransparentProxying {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_port_inbound: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_port_outbound: Option<u32>,
    /// `DualStack` (also `UnSpecified`, Kuma's default) or `IPv4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family_mode: Option<String>,
    /// The services this dataplane may reach by name; empty: all of the mesh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reachable_services: Vec<String>,
}

impl TransparentProxying {
    pub const DEFAULT_INBOUND_PORT: u16 = 15006;
    pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;

    pub fn inbound_port(&self) -> u16 {
        self.redirect_port_inbound
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(Self::DEFAULT_INBOUND_PORT)
    }

    pub fn outbound_port(&self) -> u16 {
        self.redirect_port_outbound
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(Self::DEFAULT_OUTBOUND_PORT)
    }

    pub fn ipv6(&self) -> bool {
        !matches!(self.ip_family_mode.as_deref(), Some("IPv4"))
    }

    fn validate(&self, errs: &mut ValidationError) {
        let f = "networking.transparentProxying";
        for (name, port) in [
            ("redirectPortInbound", self.redirect_port_inbound),
            ("redirectPortOutbound", self.redirect_port_outbound),
        ] {
            if let Some(p) = port {
                check_port(format!("{f}.{name}"), p, errs);
            }
        }
        if self.inbound_port() == self.outbound_port() {
            errs.add(
                format!("{f}.redirectPortOutbound"),
                format!(
                    "port {} is also the inbound redirect port: the two have to differ",
                    self.outbound_port()
                ),
            );
        }
        if let Some(mode) = &self.ip_family_mode
            && !matches!(mode.as_str(), "DualStack" | "IPv4" | "UnSpecified")
        {
            errs.add(
                format!("{f}.ipFamilyMode"),
                format!("{mode:?} is not one of DualStack, IPv4, UnSpecified"),
            );
        }
        for (i, s) in self.reachable_services.iter().enumerate() {
            if s.is_empty() {
                errs.add(format!("{f}.reachableServices[{i}]"), "cannot be empty");
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inbound {
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Kuma's inbound `name`, what a policy's `sectionName` selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Kuma 2.x's `protocol` field; wins over the `kuma.io/protocol` tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Empty in Kuma's newer, tag-less form: the inbound is served, but no
    /// `kuma.io/service` names it.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "tags::deserialize_tags"
    )]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    #[serde(default)]
    pub ready: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outbound {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default)]
    pub port: u32,
    #[serde(default, deserialize_with = "tags::deserialize_tags")]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Admin {
    #[serde(default)]
    pub port: u32,
}

impl Networking {
    /// Where other dataplanes reach this one.
    pub fn reachable_address(&self) -> &str {
        self.advertised_address.as_deref().unwrap_or(&self.address)
    }

    pub fn admin_port(&self) -> u16 {
        self.admin
            .as_ref()
            .and_then(|a| u16::try_from(a.port).ok())
            .filter(|p| *p != 0)
            .unwrap_or(DEFAULT_ADMIN_PORT)
    }
}

impl Inbound {
    pub fn service(&self) -> &str {
        self.tags
            .get(tags::SERVICE)
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn protocol(&self) -> Protocol {
        match &self.protocol {
            Some(p) => Protocol::from_tag(Some(p)),
            None => Protocol::from_tags(&self.tags),
        }
    }

    /// Unhealthy inbounds (`health.ready: false`) get no traffic; no health
    /// section means healthy.
    pub fn is_ready(&self) -> bool {
        self.health.as_ref().is_none_or(|h| h.ready)
    }

    pub fn listen_address<'a>(&'a self, networking: &'a Networking) -> &'a str {
        self.address.as_deref().unwrap_or(&networking.address)
    }

    /// Where the application listens, by Kuma's defaults: `serviceAddress`,
    /// else the inbound's address; `servicePort`, else `port`. Without
    /// transparent proxying that default is the sidecar's own socket, so
    /// the application is then looked for on loopback (see `validate`).
    pub fn service_target<'a>(&'a self, networking: &'a Networking) -> (&'a str, u32) {
        let listen = self.listen_address(networking);
        let port = self.service_port.unwrap_or(self.port);
        let addr = match self.service_address.as_deref() {
            Some(a) => a,
            None if networking.transparent_proxying.is_none() && port == self.port => {
                loopback_of(listen)
            }
            None => listen,
        };
        (addr, port)
    }
}

/// The loopback address of `addr`'s family.
fn loopback_of(addr: &str) -> &'static str {
    if addr.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    }
}

impl Outbound {
    pub const DEFAULT_ADDRESS: &'static str = "127.0.0.1";

    pub fn service(&self) -> &str {
        self.tags
            .get(tags::SERVICE)
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn listen_address(&self) -> &str {
        self.address.as_deref().unwrap_or(Self::DEFAULT_ADDRESS)
    }
}

pub(crate) fn check_port(field: String, port: u32, errs: &mut ValidationError) {
    if port == 0 || port > 65535 {
        errs.add(
            field,
            format!("port must be in the range [1, 65535] (got {port})"),
        );
    }
}

pub(crate) fn check_ip(field: String, addr: &str, errs: &mut ValidationError) {
    if addr.parse::<IpAddr>().is_err() {
        errs.add(field, format!("{addr:?} has to be a valid IP address"));
    }
}

pub(crate) fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl DataplaneSpec {
    pub fn networking(&self) -> Option<&Networking> {
        self.networking.as_ref()
    }
}

impl SpecType for DataplaneSpec {
    /// Kuma's `dataplane_validator.go`, field for field; and one check of
    /// Koguma's own: no two sockets of this dataplane on one address:port.
    fn validate(&self, errs: &mut ValidationError) {
        let Some(net) = &self.networking else {
            errs.add("networking", "must be defined");
            return;
        };
        match net.address.as_str() {
            "" => errs.add("networking.address", "address can't be empty"),
            "0.0.0.0" | "::" => errs.add("networking.address", "must not be 0.0.0.0 or ::"),
            a if a.parse::<IpAddr>().is_err() && !is_dns_name(a) => errs.add(
                "networking.address",
                format!("address has to be valid IP address or domain name (got {a:?})"),
            ),
            _ => {}
        }
        if let Some(adv) = &net.advertised_address {
            check_ip("networking.advertisedAddress".into(), adv, errs);
        }
        // Every socket this dataplane binds, to find collisions.
        let mut bound: Vec<(String, String, u32)> = Vec::new();
        for (i, inb) in net.inbound.iter().enumerate() {
            let f = format!("networking.inbound[{i}]");
            inb.validate(&f, net, errs);
            if net.transparent_proxying.is_none() {
                // Under transparent proxying the inbound binds no socket of
                // its own: traffic to address:port is redirected to the
                // proxy, which hands it to the application on that port.
                let listen = inb.listen_address(net);
                if inb.service_address.is_none() && inb.service_target(net) == (listen, inb.port) {
                    errs.add(
                        format!("{f}.servicePort"),
                        format!(
                            "the application would have to listen on the sidecar's own socket {listen}:{}: set servicePort, or serviceAddress to where it listens",
                            inb.port
                        ),
                    );
                }
                bound.push((f, listen.to_string(), inb.port));
            }
        }
        for (i, out) in net.outbound.iter().enumerate() {
            let f = format!("networking.outbound[{i}]");
            check_port(format!("{f}.port"), out.port, errs);
            if let Some(a) = &out.address
                && a.parse::<IpAddr>().is_err()
            {
                errs.add(format!("{f}.address"), "address has to be valid IP address");
            }
            let rules = TagRules {
                require_service: true,
                check_protocol: false,
                selector: false,
            };
            validate_tags(&format!("{f}.tags"), &out.tags, rules, errs);
            bound.push((f, out.listen_address().to_string(), out.port));
        }
        if let Some(tp) = &net.transparent_proxying {
            tp.validate(errs);
        }
        let admin_port = match &net.admin {
            Some(admin) => {
                check_port("networking.admin.port".into(), admin.port, errs);
                admin.port
            }
            None => u32::from(DEFAULT_ADMIN_PORT),
        };
        let admin_field = "networking.admin.port".to_string();
        for (field, addr, port) in &bound {
            let on_loopback = addr == "127.0.0.1" || addr == "0.0.0.0";
            if on_loopback && *port == admin_port {
                let what = if field.starts_with("networking.inbound") {
                    "inbound"
                } else {
                    "outbound"
                };
                errs.add(admin_field.clone(), format!("must differ from {what}"));
            }
        }
        for (i, (field, addr, port)) in bound.iter().enumerate() {
            if let Some((other, _, _)) = bound[..i].iter().find(|(_, a, p)| a == addr && p == port)
            {
                errs.add(
                    field.clone(),
                    format!("{addr}:{port} is already used by {other}"),
                );
            }
        }
    }
}

impl Inbound {
    /// Kuma's `validateInbound`, errors under `f`.
    fn validate(&self, f: &str, net: &Networking, errs: &mut ValidationError) {
        check_port(format!("{f}.port"), self.port, errs);
        if let Some(p) = self.service_port {
            check_port(format!("{f}.servicePort"), p, errs);
        }
        let service_port_differs = self.service_port.is_some_and(|p| p != self.port);
        let overlap = "serviceAddress and servicePort has to differ from address and port";
        if let Some(a) = &self.service_address {
            if a.parse::<IpAddr>().is_err() {
                errs.add(
                    format!("{f}.serviceAddress"),
                    "serviceAddress has to be valid IP address",
                );
            }
            if *a == net.address && !service_port_differs {
                errs.add(format!("{f}.serviceAddress"), overlap);
            }
        }
        if let Some(a) = &self.address {
            if a.parse::<IpAddr>().is_err() {
                errs.add(format!("{f}.address"), "address has to be valid IP address");
            }
            if self.service_address.as_ref() == Some(a) && !service_port_differs {
                errs.add(format!("{f}.serviceAddress"), overlap);
            }
        }
        let tags_path = format!("{f}.tags");
        let rules = TagRules {
            require_service: false,
            check_protocol: true,
            selector: false,
        };
        validate_tags(&tags_path, &self.tags, rules, errs);
        // Kuma's newer inbounds carry no tags; one with tags is the older
        // kind and must name its service.
        if !self.tags.is_empty() && !self.tags.contains_key(tags::SERVICE) {
            errs.add(
                tags::key_path(&tags_path, tags::SERVICE),
                "tag has to exist",
            );
        }
        if let Some(p) = &self.protocol
            && !tags::KNOWN_PROTOCOLS.contains(&p.as_str())
        {
            errs.add(
                format!("{f}.protocol"),
                format!(
                    "has an invalid value {p:?}. Allowed values: {}",
                    tags::KNOWN_PROTOCOLS.join(", ")
                ),
            );
        }
    }
}
