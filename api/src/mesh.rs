//! The `Mesh` resource. Fields this control plane does not enforce yet are
//! kept as given, except those whose silent absence would weaken security.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::parse_duration;
use crate::external_service::DataSource;
use crate::mesh_backends::{Backends, Constraints, Metrics};
use crate::registry::SpecType;
use crate::validation::ValidationError;

/// Kuma's defaults for the builtin CA and the certificates it issues.
pub const DEFAULT_DP_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Shorter would make rotation churn faster than configs can follow.
const MIN_DP_CERT_LIFETIME: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Mtls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<MeshNetworking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<MeshRouting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Constraints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Backends>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Backends>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_creating_initial_policies: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_services: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshNetworking {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<MeshOutbound>,
}

/// How the mesh's traffic crosses zones (Kuma's `Mesh.routing`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshRouting {
    /// Local zone first; other zones only when no local endpoint is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_aware_load_balancing: Option<bool>,
    /// Cross-zone and external traffic leaves through the local zone egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_egress: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_forbid_mesh_external_service_access: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshOutbound {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_backend: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<MtlsBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_validation: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtlsBackend {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_cert: Option<DpCert>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_chain: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<BackendConf>,
}

pub use koguma_types::MtlsMode;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DpCert {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rotation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
}

/// A CA backend's `conf`: `caCert` for `builtin`; `cert` and `key` (Kuma's
/// data sources: a Secret of the mesh, a file, or inline) for `provided`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<CaCert>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<DataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<DataSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaCert {
    #[serde(rename = "RSAbits", default, skip_serializing_if = "Option::is_none")]
    pub rsa_bits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
}

impl MtlsBackend {
    pub fn mode(&self) -> MtlsMode {
        self.mode.unwrap_or_default()
    }

    /// Workload certificate lifetime; the default when unset or invalid
    /// (validation refuses invalid values before they are stored).
    pub fn dp_cert_lifetime(&self) -> Duration {
        self.dp_cert
            .as_ref()
            .and_then(|d| d.rotation.as_ref())
            .and_then(|r| r.expiration.as_deref())
            .and_then(|e| parse_duration(e).ok())
            .unwrap_or(DEFAULT_DP_CERT_LIFETIME)
    }

    fn ca_cert(&self) -> Option<&CaCert> {
        self.conf.as_ref().and_then(|c| c.ca_cert.as_ref())
    }

    pub fn ca_lifetime(&self) -> Duration {
        self.ca_cert()
            .and_then(|c| c.expiration.as_deref())
            .and_then(|e| parse_duration(e).ok())
            .unwrap_or(DEFAULT_CA_LIFETIME)
    }

    /// `None`: ECDSA P-256, Koguma's default (Kuma's is RSA 2048).
    pub fn rsa_bits(&self) -> Option<u32> {
        self.ca_cert().and_then(|c| c.rsa_bits)
    }

    /// The provided CA's certificate and key data sources.
    pub fn provided(&self) -> Option<(&DataSource, &DataSource)> {
        let conf = self.conf.as_ref()?;
        (self.kind == "provided").then_some(())?;
        Some((conf.cert.as_ref()?, conf.key.as_ref()?))
    }

    fn validate(&self, field: &str, errs: &mut ValidationError) {
        if self.name.is_empty() {
            errs.add(format!("{field}.name"), "cannot be empty");
        }
        let conf = self.conf.clone().unwrap_or_default();
        match self.kind.as_str() {
            "builtin" => {
                if conf.cert.is_some() || conf.key.is_some() {
                    errs.add(
                        format!("{field}.conf"),
                        "cert and key are for a provided CA: a builtin CA makes its own",
                    );
                }
            }
            "provided" => {
                for (name, source) in [("cert", &conf.cert), ("key", &conf.key)] {
                    match source {
                        None => errs.add(format!("{field}.conf.{name}"), "has to be defined"),
                        Some(s) => s.validate(&format!("{field}.conf.{name}"), errs),
                    }
                }
                if conf.ca_cert.is_some() {
                    errs.add(
                        format!("{field}.conf.caCert"),
                        "is for a builtin CA: a provided CA is given whole",
                    );
                }
            }
            other => errs.add(
                format!("{field}.type"),
                format!(
                    "unknown backend type {other:?}: Koguma supports builtin and provided (vault, acmpca and certmanager are not supported)"
                ),
            ),
        }
        if let Some(e) = self
            .dp_cert
            .as_ref()
            .and_then(|d| d.rotation.as_ref())
            .and_then(|r| r.expiration.as_deref())
        {
            // Kuma names this field so, whichever backend it is in.
            let f = "mtls.dpcert.rotation.expiration";
            match parse_duration(e) {
                Ok(d) if d < MIN_DP_CERT_LIFETIME => {
                    errs.add(f, format!("{e:?} is too short: at least 5s"))
                }
                Ok(_) => {}
                Err(_) => errs.add(f, "has to be a valid format"),
            }
        }
        if let Some(ca) = self.ca_cert() {
            if let Some(e) = ca.expiration.as_deref() {
                let f = format!("{field}.conf.caCert.expiration");
                match parse_duration(e) {
                    Ok(d) if d <= self.dp_cert_lifetime() => errs.add(
                        f,
                        format!("{e:?} must be longer than the workload certificates' lifetime"),
                    ),
                    Ok(_) => {}
                    Err(msg) => errs.add(f, msg),
                }
            }
            if let Some(bits) = ca.rsa_bits
                && ![2048, 3072, 4096].contains(&bits)
            {
                errs.add(
                    format!("{field}.conf.caCert.RSAbits"),
                    format!("{bits} is not supported: use 2048, 3072 or 4096"),
                );
            }
        }
    }
}

impl MeshSpec {
    /// The backend mTLS runs on, when mTLS is enabled.
    pub fn mtls_backend(&self) -> Option<&MtlsBackend> {
        let mtls = self.mtls.as_ref()?;
        let name = mtls.enabled_backend.as_deref().filter(|n| !n.is_empty())?;
        mtls.backends.iter().find(|b| b.name == name)
    }

    /// Kuma: unset means passthrough is on.
    pub fn passthrough(&self) -> bool {
        self.networking
            .as_ref()
            .and_then(|n| n.outbound.as_ref())
            .and_then(|o| o.passthrough)
            .unwrap_or(true)
    }

    pub fn locality_aware(&self) -> bool {
        self.routing
            .as_ref()
            .and_then(|r| r.locality_aware_load_balancing)
            .unwrap_or(false)
    }

    /// Whether cross-zone and external traffic must leave through the
    /// local zone egress.
    pub fn zone_egress(&self) -> bool {
        self.routing
            .as_ref()
            .and_then(|r| r.zone_egress)
            .unwrap_or(false)
    }
}

impl MeshSpec {
    /// Whether a dataplane whose inbounds carry these tags may join this
    /// mesh (`constraints.dataplaneProxy`); `Err` says why not.
    pub fn admits(
        &self,
        inbound_tags: &[&std::collections::BTreeMap<String, String>],
    ) -> Result<(), String> {
        match &self.constraints {
            Some(c) => c.admits(inbound_tags),
            None => Ok(()),
        }
    }
}

/// Kuma allows one CA backend per mesh.
const ALLOWED_MTLS_BACKENDS: usize = 1;

impl SpecType for MeshSpec {
    /// Kuma's `mesh_validator.go`, with its field names and messages.
    fn validate(&self, errs: &mut ValidationError) {
        if let Some(mtls) = &self.mtls {
            if mtls.backends.len() > ALLOWED_MTLS_BACKENDS {
                errs.add(
                    "mtls.backends",
                    format!("cannot have more than {ALLOWED_MTLS_BACKENDS} backends"),
                );
            }
            for (i, b) in mtls.backends.iter().enumerate() {
                b.validate(&format!("mtls.backends[{i}]"), errs);
                if mtls.backends[..i].iter().any(|o| o.name == b.name) {
                    errs.add(
                        format!("mtls.backends[{i}].name"),
                        format!("{:?} name is already used for another backend", b.name),
                    );
                }
            }
            if let Some(enabled) = mtls.enabled_backend.as_deref().filter(|n| !n.is_empty())
                && !mtls.backends.iter().any(|b| b.name == enabled)
            {
                errs.add(
                    "mtls.enabledBackend",
                    "has to be set to one of the backends in the mesh",
                );
            }
        }
        if let Some(l) = &self.logging {
            l.validate_logging(errs);
        }
        if let Some(t) = &self.tracing {
            t.validate_tracing(errs);
        }
        if let Some(m) = &self.metrics {
            m.validate(errs);
        }
        if let Some(c) = &self.constraints {
            c.validate(errs);
        }
        // The egress is reached over mesh mTLS, and routes by the SNI only
        // mTLS sends.
        let enabled = self
            .mtls
            .as_ref()
            .and_then(|m| m.enabled_backend.as_deref())
            .is_some_and(|n| !n.is_empty());
        if self.zone_egress() && !enabled {
            errs.add("mtls", "has to be set when zoneEgress enabled");
        }
    }
}
