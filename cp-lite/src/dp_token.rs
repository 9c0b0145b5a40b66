//! Dataplane tokens: JWTs, as Kuma issues them, that say which dataplane may
//! register (name, mesh, tags) and until when. Each mesh has its own signing
//! key, kept in the store (`dataplane-token-signing-key-<mesh>`). Koguma
//! signs with ECDSA P-256 (ES256) rather than Kuma's RSA: smaller tokens,
//! faster checks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use koguma_api::DataplaneSpec;
use serde::{Deserialize, Serialize};

use crate::resources::{ResourceError, Resources};

/// Key id in the header; bumps when signing keys are rotated.
const KID: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no dataplane token was presented: run koguma-dp with --dataplane-token-file")]
    Missing,
    #[error("the dataplane token is malformed: {0}")]
    Malformed(String),
    #[error("the dataplane token's signature is not valid for mesh {0:?}")]
    BadSignature(String),
    #[error("the dataplane token expired at {0}")]
    Expired(String),
    #[error("the dataplane token is for {claim} {allowed:?}, not {actual:?}")]
    Mismatch {
        claim: &'static str,
        allowed: String,
        actual: String,
    },
    #[error(
        "the dataplane token allows tag {tag:?} = {allowed:?} only, but the dataplane has {actual:?}"
    )]
    TagMismatch {
        tag: String,
        allowed: BTreeSet<String>,
        actual: BTreeSet<String>,
    },
    #[error("cannot create the token signing key: {0}")]
    Key(String),
    #[error("{0}")]
    Store(#[from] ResourceError),
}

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
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

fn signing_key_name(mesh: &str) -> String {
    format!("dataplane-token-signing-key-{mesh}")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn key_pair(pkcs8_b64: &str) -> Result<EcdsaKeyPair, TokenError> {
    let der = B64
        .decode(pkcs8_b64)
        .map_err(|e| TokenError::Key(e.to_string()))?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        .map_err(|e| TokenError::Key(e.to_string()))
}

/// Signs a token for `claims.mesh`, creating the mesh's key on first use.
pub fn issue(
    resources: &Resources,
    mut claims: Claims,
    valid_for: Duration,
) -> Result<String, TokenError> {
    let stored =
        resources.secret_or_insert(&claims.mesh, &signing_key_name(&claims.mesh), || {
            let rng = SystemRandom::new();
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map(|doc| B64.encode(doc.as_ref()))
                .map_err(|e| TokenError::Key(e.to_string()))
        })?;
    let key = key_pair(&stored)?;
    let now = now_secs();
    claims.kind = "dataplane".into();
    claims.iat = now;
    claims.nbf = now.saturating_sub(60); // hosts' clocks differ a little
    claims.exp = now + valid_for.as_secs();
    let header = B64.encode(format!(r#"{{"alg":"ES256","kid":"{KID}","typ":"JWT"}}"#));
    let payload =
        B64.encode(serde_json::to_vec(&claims).map_err(|e| TokenError::Key(e.to_string()))?);
    let signing_input = format!("{header}.{payload}");
    let sig = key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .map_err(|e| TokenError::Key(e.to_string()))?;
    Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Checks a token's signature and lifetime with `mesh`'s key.
pub fn verify(resources: &Resources, mesh: &str, token: &str) -> Result<Claims, TokenError> {
    let malformed = |m: &str| TokenError::Malformed(m.to_string());
    let mut parts = token.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three dot-separated parts"));
    };
    let header: Header = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("bad header"))?;
    // Only the algorithm this CP signs with: no "none", no HMAC confusion.
    if header.alg != "ES256" {
        return Err(TokenError::Malformed(format!(
            "algorithm {:?} is not accepted: expected ES256",
            header.alg
        )));
    }
    let sig = B64
        .decode(s)
        .map_err(|_| malformed("bad signature encoding"))?;
    let Some(stored) = resources.secret(mesh, &signing_key_name(mesh))? else {
        // No key: no token was ever issued for this mesh, so none is valid.
        return Err(TokenError::BadSignature(mesh.to_string()));
    };
    let key = key_pair(&stored)?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key().as_ref())
        .verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| TokenError::BadSignature(mesh.to_string()))?;
    let claims: Claims = B64
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("bad claims"))?;
    let now = now_secs();
    if now >= claims.exp {
        let at = UNIX_EPOCH + Duration::from_secs(claims.exp);
        return Err(TokenError::Expired(
            humantime::format_rfc3339_seconds(at).to_string(),
        ));
    }
    if now < claims.nbf {
        return Err(malformed("not valid yet (nbf is in the future)"));
    }
    Ok(claims)
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
