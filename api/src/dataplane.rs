//! The `Dataplane` resource (Kuma 2.x, Universal) and its validation.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::registry::SpecType;
use crate::tags::{self, Protocol};
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
    #[serde(default)]
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
    #[serde(default)]
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
        Protocol::from_tags(&self.tags)
    }

    /// Unhealthy inbounds (`health.ready: false`) get no traffic; no health
    /// section means healthy.
    pub fn is_ready(&self) -> bool {
        self.health.as_ref().is_none_or(|h| h.ready)
    }

    pub fn listen_address<'a>(&'a self, networking: &'a Networking) -> &'a str {
        self.address.as_deref().unwrap_or(&networking.address)
    }

    /// Where the application listens: `serviceAddress`, else the inbound's
    /// address; `servicePort`, else `port`.
    pub fn service_target<'a>(&'a self, networking: &'a Networking) -> (&'a str, u32) {
        let addr = self
            .service_address
            .as_deref()
            .unwrap_or_else(|| self.listen_address(networking));
        (addr, self.service_port.unwrap_or(self.port))
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
            format!("port {port} must be in the range from 1 to 65535"),
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

pub(crate) fn check_tags(field: &str, tags: &BTreeMap<String, String>, errs: &mut ValidationError) {
    match tags.get(tags::SERVICE) {
        None => errs.add(field, format!("{:?} is required", tags::SERVICE)),
        Some(s) if s.is_empty() => errs.add(
            format!("{field}[{:?}]", tags::SERVICE),
            "tag value cannot be empty",
        ),
        Some(_) => {}
    }
    for (k, v) in tags {
        if !tags::valid_tag_key(k) {
            errs.add(
                format!("{field}[{k:?}]"),
                "tag name must consist of alphanumeric characters, dots, dashes, slashes, colons and underscores",
            );
        }
        if v.is_empty() {
            if k != tags::SERVICE {
                errs.add(format!("{field}[{k:?}]"), "tag value cannot be empty");
            }
        } else if !tags::valid_tag_value(v) {
            errs.add(
                format!("{field}[{k:?}]"),
                format!("tag value {v:?} must consist of alphanumeric characters, dots, dashes, colons and underscores"),
            );
        }
    }
}

impl DataplaneSpec {
    pub fn networking(&self) -> Option<&Networking> {
        self.networking.as_ref()
    }
}

impl SpecType for DataplaneSpec {
    fn validate(&self, errs: &mut ValidationError) {
        let Some(net) = &self.networking else {
            errs.add("networking", "must be defined");
            return;
        };
        match net.address.as_str() {
            "" => errs.add("networking.address", "address can't be empty"),
            "0.0.0.0" | "::" => errs.add(
                "networking.address",
                format!(
                    "{:?} is not allowed: use an address other dataplanes can reach",
                    net.address
                ),
            ),
            a if a.parse::<IpAddr>().is_err() && !is_dns_name(a) => errs.add(
                "networking.address",
                format!("{a:?} has to be a valid IP address or domain name"),
            ),
            _ => {}
        }
        if let Some(adv) = &net.advertised_address {
            check_ip("networking.advertisedAddress".into(), adv, errs);
        }
        if net.inbound.is_empty() {
            errs.add(
                "networking",
                "has to contain at least one inbound interface",
            );
        }
        // Every socket this dataplane binds, to find collisions.
        let mut bound: Vec<(String, String, u32)> = Vec::new();
        for (i, inb) in net.inbound.iter().enumerate() {
            let f = format!("networking.inbound[{i}]");
            check_port(format!("{f}.port"), inb.port, errs);
            if let Some(p) = inb.service_port {
                check_port(format!("{f}.servicePort"), p, errs);
            }
            if let Some(a) = &inb.service_address {
                check_ip(format!("{f}.serviceAddress"), a, errs);
            }
            if let Some(a) = &inb.address {
                check_ip(format!("{f}.address"), a, errs);
            }
            check_tags(&format!("{f}.tags"), &inb.tags, errs);
            let listen = inb.listen_address(net);
            if net.transparent_proxying.is_some() {
                // Under transparent proxying the inbound binds no socket of
                // its own: traffic to address:port is redirected to the
                // proxy, which hands it to the application on that port.
                continue;
            }
            if inb.service_target(net) == (listen, inb.port) {
                errs.add(
                    f.clone(),
                    format!(
                        "serviceAddress:servicePort ({listen}:{}) has to differ from address:port",
                        inb.port
                    ),
                );
            }
            bound.push((f, listen.to_string(), inb.port));
        }
        for (i, out) in net.outbound.iter().enumerate() {
            let f = format!("networking.outbound[{i}]");
            check_port(format!("{f}.port"), out.port, errs);
            if let Some(a) = &out.address {
                check_ip(format!("{f}.address"), a, errs);
            }
            check_tags(&format!("{f}.tags"), &out.tags, errs);
            bound.push((f, out.listen_address().to_string(), out.port));
        }
        if let Some(tp) = &net.transparent_proxying {
            tp.validate(errs);
        }
        if let Some(admin) = &net.admin {
            check_port("networking.admin.port".into(), admin.port, errs);
            bound.push(("networking.admin".into(), "127.0.0.1".into(), admin.port));
        } else {
            bound.push((
                "networking.admin (default)".into(),
                "127.0.0.1".into(),
                u32::from(DEFAULT_ADMIN_PORT),
            ));
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
