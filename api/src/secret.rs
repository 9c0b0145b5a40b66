//! Kuma's `Secret`: bytes kept in a mesh (`/meshes/{mesh}/secrets`),
//! base64 in `data`. Data sources name them (`secret: <name>`): a provided
//! CA's certificate and key, an external service's TLS material.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::registry::SpecType;
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    /// Base64.
    #[serde(default)]
    pub data: String,
}

impl SecretSpec {
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD
            .decode(self.data.trim())
            .map_err(|e| format!("data is not valid base64: {e}"))
    }
}

impl SpecType for SecretSpec {
    fn validate(&self, errs: &mut ValidationError) {
        if let Err(e) = self.bytes() {
            errs.add("data", e);
        }
    }
}
