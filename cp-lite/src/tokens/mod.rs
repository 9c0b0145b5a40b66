//! Tokens: JWTs with Kuma's claim names, signed by keys the CP keeps in its
//! store. Koguma signs with ECDSA P-256 (ES256) rather than Kuma's RSA:
//! smaller tokens, faster checks. Dataplane tokens let a dataplane register
//! with its zone CP; zone tokens let a zone CP (or a zone proxy) connect to
//! the global.

pub mod dataplane;
pub mod user;
pub mod zone;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::resources::{ResourceError, Resources};

/// Key id in the header; bumps when signing keys are rotated.
const KID: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// What is missing and how to give it.
    #[error("{0}")]
    Missing(&'static str),
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the {token} token's signature is not valid for {key}")]
    BadSignature { token: &'static str, key: String },
    #[error("the token expired at {0}")]
    Expired(String),
    #[error("the token is for {claim} {allowed:?}, not {actual:?}")]
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
    #[error("the zone token's scope {scope:?} does not include {wanted:?}")]
    Scope { scope: Vec<String>, wanted: String },
    #[error("cannot create the token signing key: {0}")]
    Key(String),
    #[error(
        "{0} has not arrived from the global control plane yet (zones use the global's keys): try again in a moment, or issue the token on the global"
    )]
    NotSynced(String),
    #[error("cannot write {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] ResourceError),
}

/// The registered claims every token carries (JWT `iat`, `nbf`, `exp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lifetime {
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// Claims of a kind of token: their lifetime is set when signed.
pub trait TokenClaims {
    fn lifetime(&mut self) -> &mut Lifetime;
}

/// The token in a request's `authorization: Bearer <token>` header.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_string)
}

/// The token of an `authorization` header value `Bearer <token>`, if any
/// (for gRPC metadata and REST headers alike).
pub fn bearer_token(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Where a signing key is kept: (mesh, secret name); mesh "" for global keys.
pub type KeyName = (String, String);

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

/// The stored signing key `key`, created on first use, except on a
/// federated zone: there keys come from the global, so that tokens work in
/// every zone.
async fn signing_key(resources: &Resources, key: &KeyName) -> Result<String, TokenError> {
    if resources.role().zone_name().is_some() {
        return resources
            .secret(&key.0, &key.1)
            .await?
            .ok_or_else(|| TokenError::NotSynced(key.1.clone()));
    }
    let mut stored = resources
        .secrets_or_insert(&key.0, &[key.1.as_str()], || {
            let rng = SystemRandom::new();
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map(|doc| vec![B64.encode(doc.as_ref())])
                .map_err(|e| TokenError::Key(e.to_string()))
        })
        .await?;
    stored
        .pop()
        .ok_or_else(|| TokenError::Key(format!("{} was not stored", key.1)))
}

/// Where the public half of `key` is kept for control planes that only
/// check tokens (zones check zone proxies' tokens with the global's key).
pub fn public_key_name(key: &KeyName) -> KeyName {
    (
        key.0.clone(),
        key.1.replacen("signing-key", "signing-public-key", 1),
    )
}

/// The public key that checks `key`'s signatures: from the signing key
/// where this CP has it, else from its public half.
async fn public_key(resources: &Resources, key: &KeyName) -> Result<Option<Vec<u8>>, TokenError> {
    if let Some(private) = resources.secret(&key.0, &key.1).await? {
        return Ok(Some(key_pair(&private)?.public_key().as_ref().to_vec()));
    }
    let (mesh, name) = public_key_name(key);
    match resources.secret(&mesh, &name).await? {
        Some(b64) => B64
            .decode(b64.trim())
            .map(Some)
            .map_err(|e| TokenError::Key(format!("{name}: {e}"))),
        None => Ok(None),
    }
}

/// The global keys whose public halves zones receive: zone tokens (a zone
/// checks its zone proxies') and user tokens (a zone's REST API checks
/// them). Never a signing key: with one a zone could forge any token.
fn synced_keys() -> [KeyName; 2] {
    [zone::key(), user::key()]
}

/// The public halves a global sends its zones: (store name, base64).
pub async fn synced_public_keys(
    resources: &Resources,
) -> Vec<Result<(String, String), TokenError>> {
    let mut out = Vec::new();
    for k in synced_keys() {
        out.push(
            public_key_data(resources, &k)
                .await
                .map(|data| (public_key_name(&k).1, data)),
        );
    }
    out
}

/// Whether `name` (a global secret) is one of those public halves.
pub fn is_synced_public_key(name: &str) -> bool {
    synced_keys().iter().any(|k| public_key_name(k).1 == name)
}

/// The store names of those public halves.
pub fn synced_public_key_names() -> Vec<String> {
    synced_keys().iter().map(|k| public_key_name(k).1).collect()
}

/// The public half of `key` as stored (base64), made with the key if need
/// be: what the global gives its zones.
pub async fn public_key_data(resources: &Resources, key: &KeyName) -> Result<String, TokenError> {
    let private = signing_key(resources, key).await?;
    Ok(B64.encode(key_pair(&private)?.public_key().as_ref()))
}

/// Signs `claims`, valid from now for `valid_for`, with the key `key`.
pub async fn sign<C: Serialize + TokenClaims>(
    resources: &Resources,
    key: &KeyName,
    mut claims: C,
    valid_for: Duration,
) -> Result<String, TokenError> {
    let stored = signing_key(resources, key).await?;
    let key = key_pair(&stored)?;
    let now = now_secs();
    // Hosts' clocks differ a little.
    *claims.lifetime() = Lifetime {
        iat: now,
        nbf: now.saturating_sub(60),
        exp: now + valid_for.as_secs(),
    };
    let header = B64.encode(format!(r#"{{"alg":"ES256","kid":"{KID}","typ":"JWT"}}"#));
    let payload =
        B64.encode(serde_json::to_vec(&claims).map_err(|e| TokenError::Key(e.to_string()))?);
    let signing_input = format!("{header}.{payload}");
    let sig = key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .map_err(|e| TokenError::Key(e.to_string()))?;
    Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
}

/// Checks a token's signature (with `key`) and lifetime; `token_kind` and
/// `key_desc` name them in errors ("dataplane", "mesh \"default\"").
pub async fn verify_signed<C: DeserializeOwned + TokenClaims>(
    resources: &Resources,
    key: &KeyName,
    token_kind: &'static str,
    key_desc: &str,
    token: &str,
) -> Result<C, TokenError> {
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
    let bad_signature = || TokenError::BadSignature {
        token: token_kind,
        key: key_desc.to_string(),
    };
    // No key: no such token was ever issued here, so none is valid.
    let public = public_key(resources, key)
        .await?
        .ok_or_else(bad_signature)?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
        .verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| bad_signature())?;
    let mut claims: C = B64
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("bad claims"))?;
    let now = now_secs();
    let Lifetime { nbf, exp, .. } = *claims.lifetime();
    if now >= exp {
        let at = UNIX_EPOCH + Duration::from_secs(exp);
        return Err(TokenError::Expired(
            humantime::format_rfc3339_seconds(at).to_string(),
        ));
    }
    if now < nbf {
        return Err(malformed("not valid yet (nbf is in the future)"));
    }
    Ok(claims)
}
