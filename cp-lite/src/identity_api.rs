//! REST endpoints that hand out credentials: dataplane tokens (Kuma's
//! `POST /tokens/dataplane`), zone tokens (`POST /tokens/zone`, on the
//! global) and workload certificates for proxies that are
//! not Koguma's (an Envoy, a test client), signed over a CSR so that the
//! key stays with whoever asked. Both are admin operations: the API listens
//! on loopback by default.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use koguma_api::{ValidationError, parse_duration, tags, validate_name};
use serde::Deserialize;
use serde_json::json;

use crate::api_server::{ApiError, ApiState};
use crate::tokens::{
    self,
    dataplane::{self as dp_token, Claims},
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(default)]
    name: String,
    mesh: String,
    #[serde(default)]
    tags: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    valid_for: Option<String>,
}

/// The shortest and longest lifetime a token or certificate may be given:
/// shorter cannot be used before it expires, longer is a credential that
/// outlives any reason to keep it (and its expiry must fit in a JWT).
const SHORTEST: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(10 * 365 * 86_400);

fn lifetime(field: &str, text: Option<&str>, default: &str) -> Result<Duration, ApiError> {
    let text = text.unwrap_or(default);
    let invalid = |m: String| ApiError::Invalid(ValidationError::single(field, m));
    let d = parse_duration(text).map_err(invalid)?;
    if d < SHORTEST || d > LONGEST {
        return Err(invalid(format!(
            "{text:?} is out of range: must be between 1s and 10y"
        )));
    }
    Ok(d)
}

/// A federated zone signs no global credentials: its global does.
fn issued_here(s: &ApiState, what: &str) -> Result<(), ApiError> {
    if let crate::role::Role::Zone(_) = s.resources.role() {
        return Err(ApiError::BadRequest(format!(
            "{what} are issued by the global control plane (koguma-cp run --mode global): run this against it"
        )));
    }
    Ok(())
}

fn existing_mesh(s: &ApiState, mesh: &str) -> Result<(), ApiError> {
    if s.resources.catalog().mesh(mesh).is_none() {
        return Err(ApiError::Invalid(ValidationError::single(
            "mesh",
            format!("mesh {mesh:?} does not exist"),
        )));
    }
    Ok(())
}

pub async fn dataplane_token(
    State(s): State<ApiState>,
    Json(req): Json<TokenRequest>,
) -> Result<Response, ApiError> {
    existing_mesh(&s, &req.mesh)?;
    let mut errs = ValidationError::default();
    if !req.name.is_empty() {
        validate_name("name", &req.name, &mut errs);
    }
    if let Some(k) = req.kind.as_deref().filter(|k| *k != "dataplane") {
        errs.add(
            "type",
            format!("{k:?} is not supported: expected dataplane"),
        );
    }
    errs.into_result().map_err(ApiError::Invalid)?;
    let valid_for = lifetime("validFor", req.valid_for.as_deref(), "24h")?;
    let claims = Claims {
        name: req.name.clone(),
        mesh: req.mesh.clone(),
        tags: req.tags,
        ..Default::default()
    };
    let token = dp_token::issue(&s.resources, claims, valid_for)
        .await
        .map_err(|e| match e {
            tokens::TokenError::NotSynced(_) => ApiError::BadRequest(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        })?;
    tracing::info!(mesh = %req.mesh, name = %req.name, ?valid_for, "dataplane token issued");
    Ok(token.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateRequest {
    /// PEM-encoded PKCS#10 request.
    csr: String,
    service: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    valid_for: Option<String>,
}

pub async fn workload_certificate(
    State(s): State<ApiState>,
    Path(mesh): Path<String>,
    Json(req): Json<CertificateRequest>,
) -> Result<Response, ApiError> {
    existing_mesh(&s, &mesh)?;
    // The service and tags become URI SANs: held to what a Dataplane's
    // kuma.io/service and tags may be, so no value can smuggle another
    // identity (a '/', a ',') into the certificate.
    let mut errs = ValidationError::default();
    let value_rule = "must be a valid tag value: letters, digits and . - _ : only";
    if req.service.is_empty() {
        errs.add("service", "cannot be empty");
    } else if !tags::valid_tag_value(&req.service) {
        errs.add("service", format!("{:?} {value_rule}", req.service));
    }
    for (k, v) in &req.tags {
        let field = format!("tags[{k:?}]");
        if !tags::valid_tag_key(k) {
            errs.add(
                &field,
                "must be a valid tag key: letters, digits and . - _ : / only",
            );
        } else if v.is_empty() || !tags::valid_tag_value(v) {
            errs.add(field, format!("{v:?} {value_rule}"));
        }
    }
    errs.into_result().map_err(ApiError::Invalid)?;
    let catalog = s.resources.catalog();
    let backend = catalog
        .mesh(&mesh)
        .and_then(|m| m.mtls_backend())
        .ok_or_else(|| {
            ApiError::Invalid(ValidationError::single(
                "mesh",
                format!("mesh {mesh:?} does not have mTLS enabled"),
            ))
        })?;
    let valid_for = match req.valid_for.as_deref() {
        Some(text) => lifetime("validFor", Some(text), "")?,
        None => backend.dp_cert_lifetime(),
    };
    let csr_der = {
        use rustls::pki_types::CertificateSigningRequestDer;
        use rustls::pki_types::pem::PemObject;
        CertificateSigningRequestDer::from_pem_slice(req.csr.as_bytes()).map_err(|e| {
            ApiError::Invalid(ValidationError::single(
                "csr",
                format!("not a PEM CSR: {e}"),
            ))
        })?
    };
    let mut uris = vec![format!("spiffe://{mesh}/{}", req.service)];
    uris.push(format!("kuma://kuma.io/service/{}", req.service));
    uris.extend(req.tags.iter().map(|(k, v)| format!("kuma://{k}/{v}")));
    let ca = s
        .cas
        .get(&mesh, backend)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let issued = ca
        .issue(csr_der.as_ref(), &uris, valid_for)
        .map_err(|e| ApiError::Invalid(ValidationError::single("csr", e.to_string())))?;
    tracing::info!(%mesh, service = %req.service, identities = ?uris, "workload certificate issued through the API");
    Ok(Json(json!({
        "certificate": issued.cert_pem,
        "caCertificate": ca.cert_pem,
        "identities": uris,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneTokenRequest {
    zone: String,
    /// Kuma's default: every scope (cp, ingress, egress).
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    valid_for: Option<String>,
}

/// Kuma's `POST /tokens/zone`, on the global (its key signs them) and on a
/// standalone CP (for its own zone proxies); a federated zone refuses.
pub async fn zone_token(
    State(s): State<ApiState>,
    Json(req): Json<ZoneTokenRequest>,
) -> Result<Response, ApiError> {
    // A standalone CP signs the tokens of its own zone proxies.
    issued_here(&s, "zone tokens")?;
    let mut errs = ValidationError::default();
    validate_name("zone", &req.zone, &mut errs);
    let scope = if req.scope.is_empty() {
        tokens::zone::SCOPES.iter().map(|s| s.to_string()).collect()
    } else {
        req.scope
    };
    for (i, sc) in scope.iter().enumerate() {
        if !tokens::zone::SCOPES.contains(&sc.as_str()) {
            errs.add(
                format!("scope[{i}]"),
                format!("{sc:?} is not a scope: expected cp, ingress or egress"),
            );
        }
    }
    errs.into_result().map_err(ApiError::Invalid)?;
    let valid_for = lifetime("validFor", req.valid_for.as_deref(), "24h")?;
    let token = tokens::zone::issue(&s.resources, &req.zone, scope.clone(), valid_for)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(zone = %req.zone, ?scope, ?valid_for, "zone token issued");
    Ok(token.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserTokenRequest {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    valid_for: Option<String>,
}

/// Kuma's `POST /tokens/user`: a token for a REST API caller on another
/// host. Admins only (`api_server::auth`); issued where the key is made
/// (a standalone CP or the global), and checked by zones too.
pub async fn user_token(
    State(s): State<ApiState>,
    Json(req): Json<UserTokenRequest>,
) -> Result<Response, ApiError> {
    issued_here(&s, "user tokens")?;
    let mut errs = ValidationError::default();
    if req.name.trim().is_empty() {
        errs.add("name", "cannot be empty");
    }
    for (i, g) in req.groups.iter().enumerate() {
        if g.trim().is_empty() {
            errs.add(format!("groups[{i}]"), "cannot be empty");
        }
    }
    errs.into_result().map_err(ApiError::Invalid)?;
    let valid_for = lifetime("validFor", req.valid_for.as_deref(), "24h")?;
    let mut groups = req.groups;
    groups.push(tokens::user::AUTHENTICATED_GROUP.into());
    let token = tokens::user::issue(&s.resources, &req.name, groups.clone(), valid_for)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(name = %req.name, ?groups, ?valid_for, "user token issued");
    Ok(token.into_response())
}
