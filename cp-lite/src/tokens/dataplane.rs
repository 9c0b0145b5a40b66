//! Dataplane tokens: which dataplane may register (name, mesh, tags) and
//! until when. Each mesh has its own signing key, kept in the store
//! (`dataplane-token-signing-key-<mesh>`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use koguma_api::DataplaneSpec;
use serde::{Deserialize, Serialize};

use super::{Lifetime, TokenError, sign, verify_signed};
use crate::resources::Resources;

/// Kuma's claim names, so tokens read the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Mesh", default)]
    pub mesh: String,
    #[serde(rename = "Tags", default)]
    pub tags: BTreeMap<String, Vec<String>>,
    #[serde(rename = "Type", default)]
    pub kind: String,
    #[serde(flatten)]
    pub lifetime: Lifetime,
}

/// Kuma's name for a mesh's dataplane-token signing key. In multi-zone the
/// global makes it and sends it to every zone, so that a token works in
/// whichever zone its dataplane runs.
pub fn signing_key_name(mesh: &str) -> String {
    format!("dataplane-token-signing-key-{mesh}")
}

/// The mesh's signing key as stored, made first if need be.
pub async fn signing_key(resources: &Resources, mesh: &str) -> Result<String, TokenError> {
    super::signing_key(resources, &(mesh.to_string(), signing_key_name(mesh))).await
}

impl super::TokenClaims for Claims {
    fn lifetime(&mut self) -> &mut Lifetime {
        &mut self.lifetime
    }
}

/// Signs a token for `claims.mesh`, creating the mesh's key on first use.
pub async fn issue(
    resources: &Resources,
    mut claims: Claims,
    valid_for: Duration,
) -> Result<String, TokenError> {
    claims.kind = "dataplane".into();
    let key = (claims.mesh.clone(), signing_key_name(&claims.mesh));
    sign(resources, &key, claims, valid_for).await
}

/// Checks a token's signature and lifetime with `mesh`'s key.
pub async fn verify(resources: &Resources, mesh: &str, token: &str) -> Result<Claims, TokenError> {
    let key = (mesh.to_string(), signing_key_name(mesh));
    verify_signed(
        resources,
        &key,
        "dataplane",
        &format!("mesh {mesh:?}"),
        token,
    )
    .await
}

/// Whether the token's claims allow this dataplane: same mesh and name when
/// the token names them, and every tag the token constrains carries only
/// allowed values on every inbound.
pub fn authorize(
    claims: &Claims,
    mesh: &str,
    name: &str,
    dp: &DataplaneSpec,
) -> Result<(), TokenError> {
    let check = |claim, allowed: &str, actual: &str| {
        if !allowed.is_empty() && allowed != actual {
            return Err(TokenError::Mismatch {
                claim,
                allowed: allowed.into(),
                actual: actual.into(),
            });
        }
        Ok(())
    };
    check("mesh", &claims.mesh, mesh)?;
    check("name", &claims.name, name)?;
    let inbounds = dp.networking().map(|n| n.inbound.as_slice()).unwrap_or(&[]);
    for (tag, allowed) in &claims.tags {
        let allowed: BTreeSet<String> = allowed.iter().cloned().collect();
        let actual: BTreeSet<String> = inbounds
            .iter()
            .map(|i| i.tags.get(tag).cloned().unwrap_or_default())
            .collect();
        if actual.is_empty() || !actual.is_subset(&allowed) {
            return Err(TokenError::TagMismatch {
                tag: tag.clone(),
                allowed,
                actual,
            });
        }
    }
    Ok(())
}
