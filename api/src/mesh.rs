//! The `Mesh` resource. Fields this control plane does not enforce yet are
//! kept as given, except those whose silent absence would weaken security.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<MeshNetworking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Value>,
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshOutbound {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<bool>,
}

impl MeshSpec {
    /// Kuma: unset means passthrough is on.
    pub fn passthrough(&self) -> bool {
        self.networking
            .as_ref()
            .and_then(|n| n.outbound.as_ref())
            .and_then(|o| o.passthrough)
            .unwrap_or(true)
    }

    pub fn validate(&self, errs: &mut ValidationError) {
        // A user who enables mTLS or membership constraints expects them to
        // be enforced; accepting them unenforced would be a silent hole.
        let mtls_enabled = self
            .mtls
            .as_ref()
            .and_then(|m| m.get("enabledBackend"))
            .and_then(Value::as_str)
            .is_some_and(|b| !b.is_empty());
        if mtls_enabled {
            errs.add(
                "mtls.enabledBackend",
                "mesh mTLS is not supported by this version of koguma-cp; remove it rather than run unprotected",
            );
        }
        if self.constraints.is_some() {
            errs.add(
                "constraints",
                "dataplane membership constraints are not supported by this version of koguma-cp",
            );
        }
    }
}
