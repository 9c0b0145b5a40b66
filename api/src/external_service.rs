//! `ExternalService` (Kuma's legacy resource): a service outside the mesh,
//! reached by mesh callers under a `kuma.io/service` name through the zone
//! egress, which originates plain TCP or TLS to the real host.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dataplane::{check_port, is_dns_name};
use crate::registry::SpecType;
use crate::tags;
use crate::tags::{TagRules, validate_tags};
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalServiceSpec {
    #[serde(default)]
    pub networking: ExternalNetworking,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalNetworking {
    /// `host:port`.
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_host_dns_entry: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ExternalTls>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalTls {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<DataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<DataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<DataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_renegotiation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_hostname_verification: Option<bool>,
}

/// Kuma's DataSource: exactly one of these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_string: Option<String>,
}

impl DataSource {
    /// The bytes it stands for; `secret` looks a Secret of the mesh up by
    /// name. `Err` says why not.
    pub fn read_with(
        &self,
        secret: impl FnOnce(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Vec<u8>, String> {
        use base64::Engine;
        if let Some(name) = &self.secret {
            return secret(name);
        }
        if let Some(s) = &self.inline_string {
            return Ok(s.clone().into_bytes());
        }
        if let Some(b) = &self.inline {
            return base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| format!("inline is not valid base64: {e}"));
        }
        if let Some(path) = &self.file {
            return std::fs::read(path).map_err(|e| format!("cannot read file {path}: {e}"));
        }
        Err("no data source given".into())
    }

    pub(crate) fn validate(&self, field: &str, errs: &mut ValidationError) {
        let given = [
            self.secret.is_some(),
            self.file.is_some(),
            self.inline.is_some(),
            self.inline_string.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            errs.add(field, "data source has to be chosen. Available sources: secret, file, inline, inlineString");
            return;
        }
        // A secret is looked up when it is used: it may be applied after.
        let no_secret = |_: &str| Err(String::new());
        if let Some(name) = &self.secret {
            crate::validation::validate_identifier(&format!("{field}.secret"), name, errs);
        } else if self.file.as_deref().is_some_and(str::is_empty) {
            errs.add(format!("{field}.file"), "cannot be empty");
        } else if self.inline.is_some()
            && let Err(e) = self.read_with(no_secret)
        {
            errs.add(format!("{field}.inline"), e);
        }
    }
}

impl ExternalServiceSpec {
    pub fn service(&self) -> &str {
        self.tags.get(tags::SERVICE).map_or("", String::as_str)
    }

    /// (host, port) of `networking.address`.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        let (host, port) = self.networking.address.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some((host, port.parse().ok()?))
    }
}

impl SpecType for ExternalServiceSpec {
    fn validate(&self, errs: &mut ValidationError) {
        let address = &self.networking.address;
        let field = "networking.address";
        if address.is_empty() {
            errs.add(field, "address can't be empty");
        } else {
            match address.rsplit_once(':') {
                None => errs.add(field, "unable to parse address"),
                Some((host, port)) => {
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    if host.parse::<std::net::IpAddr>().is_err() && !is_dns_name(host) {
                        errs.add(
                            field,
                            "address has to be a valid IP address or a domain name",
                        );
                    }
                    match port.parse::<u32>() {
                        Ok(p) => check_port(field.into(), p, errs),
                        Err(_) => errs.add(field, "unable to parse port in address"),
                    }
                }
            }
        }
        validate_tags(
            "tags",
            &self.tags,
            TagRules {
                require_service: true,
                check_protocol: true,
                selector: false,
            },
            errs,
        );
        if let Some((host, _)) = self.networking.address.rsplit_once(':')
            && host == self.service()
        {
            errs.add(
                format!("tags[{:?}]", tags::SERVICE),
                "cannot be the same as networking.address",
            );
        }
        if let Some(tls) = &self.networking.tls {
            if tls.server_name.as_deref() == Some("") {
                errs.add("networking.tls.serverName", "cannot be empty");
            }
            for (name, source) in [
                ("caCert", &tls.ca_cert),
                ("clientCert", &tls.client_cert),
                ("clientKey", &tls.client_key),
            ] {
                if let Some(s) = source {
                    s.validate(&format!("networking.tls.{name}"), errs);
                }
            }
            if tls.client_cert.is_some() != tls.client_key.is_some() {
                errs.add(
                    "networking.tls.clientKey",
                    "clientCert and clientKey have to be given together",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validation::errors_of as errors;

    #[test]
    fn kumas_checks_name_the_field() {
        let ok = "type: ExternalService\nmesh: default\nname: httpbin\ntags:\n  kuma.io/service: httpbin\nnetworking:\n  address: httpbin.org:443\n  tls:\n    enabled: true\n    caCert:\n      inlineString: x\n";
        assert_eq!(errors(ok), "");
        let bad = "type: ExternalService\nmesh: default\nname: x\ntags:\n  kuma.io/service: a.b\nnetworking:\n  address: a.b:70000\n  tls:\n    caCert: {}\n";
        let e = errors(bad);
        assert!(e.contains("networking.address"), "{e}");
        assert!(
            e.contains("cannot be the same as networking.address"),
            "{e}"
        );
        assert!(e.contains("networking.tls.caCert"), "{e}");
        let e =
            errors("type: ExternalService\nmesh: default\nname: x\nnetworking:\n  address: ''\n");
        assert!(
            e.contains("address can't be empty") && e.contains("kuma.io/service"),
            "{e}"
        );
    }
}
