//! The REST API, with Kuma's paths and JSON shapes: one set of handlers
//! for every registered resource type, and the views Kuma adds on top
//! (dataplane overviews, a dataplane's config, tokens).

pub mod auth;
mod list_filter;
mod overview;
mod resources;
mod zones;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use koguma_api::ValidationError;
use serde_json::{Value, json};

use crate::dp_server::status::StatusRegistry;
use crate::identity_api;
use crate::kds::insights::{RemoteInsights, ZoneInsights};
use crate::mesh_ca::MeshCas;
use crate::proxy_config::ConfigSnapshot;
use crate::resources::{ResourceError, Resources};
use crate::store::StoreError;

#[derive(Clone)]
pub struct ApiState {
    pub resources: Arc<Resources>,
    pub status: Arc<StatusRegistry>,
    pub cas: Arc<MeshCas>,
    pub snapshots: tokio::sync::watch::Receiver<Arc<ConfigSnapshot>>,
    /// Each zone's sync streams (empty unless this is a global).
    pub zones: Arc<ZoneInsights>,
    /// Zones' dataplane insights (empty unless this is a global).
    pub remote_insights: Arc<RemoteInsights>,
    pub auth: auth::ApiAuth,
}

pub fn router(state: ApiState) -> Router {
    // Static segments win over captures, so the special paths come first
    // in meaning, not in order; `/meshes/{name}` is spelled out because it
    // is also the prefix of every mesh-scoped path.
    Router::new()
        .route("/", get(index))
        .route("/meshes/{mesh}/dataplanes+insights", get(overview::list))
        .route("/meshes/{mesh}/dataplanes/_overview", get(overview::list))
        .route(
            "/meshes/{mesh}/dataplanes/{name}/_overview",
            get(overview::get),
        )
        .route(
            "/meshes/{mesh}/dataplanes+insights/{name}",
            get(overview::get),
        )
        .route(
            "/meshes/{mesh}/dataplanes/{name}/_config",
            get(overview::config),
        )
        .route("/zones+insights", get(zones::list))
        .route("/zones+insights/{name}", get(zones::get))
        .route("/tokens/dataplane", post(identity_api::dataplane_token))
        .route("/tokens/zone", post(identity_api::zone_token))
        .route("/tokens/user", post(identity_api::user_token))
        .route(
            "/meshes/{mesh}/workload-certificates",
            post(identity_api::workload_certificate),
        )
        .route("/{collection}", get(resources::list))
        .route(
            "/{collection}/{name}",
            get(resources::get)
                .put(resources::put)
                .delete(resources::delete),
        )
        .route(
            "/meshes/{name}",
            get(resources::get)
                .put(resources::put)
                .delete(resources::delete),
        )
        .route("/meshes/{mesh}/{collection}", get(resources::list))
        .route(
            "/meshes/{mesh}/{collection}/{name}",
            get(resources::get)
                .put(resources::put)
                .delete(resources::delete),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::check,
        ))
        .with_state(state)
}

/// Kuma's error body: `type`, `status`, `title`, `detail` and
/// `invalid_parameters` (`field`, `reason`), and the same again as
/// `details` and `causes` (`field`, `message`) for clients written against
/// Kuma before 2.4.
pub enum ApiError {
    /// A resource that is not valid.
    Invalid(ValidationError),
    /// A list query (filters, page) that is not valid.
    InvalidQuery(ValidationError),
    /// A request that cannot be done here, and why.
    BadRequest(String),
    /// No credentials, or bad ones, for what was asked.
    Unauthenticated(String),
    /// Credentials that do not allow what was asked.
    Forbidden(String),
    /// A write that lost to a concurrent one (or to `If-Match`).
    Conflict(String),
    NotFound(String),
    /// A path under a mesh that does not exist.
    MeshNotFound(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, title, detail, violations) = match self {
            ApiError::Invalid(e) => (
                StatusCode::BAD_REQUEST,
                "Could not process a resource",
                "Resource is not valid".to_string(),
                e.violations,
            ),
            ApiError::InvalidQuery(e) => (
                StatusCode::BAD_REQUEST,
                "Could not retrieve resources",
                "Resource is not valid".to_string(),
                e.violations,
            ),
            ApiError::BadRequest(d) => (StatusCode::BAD_REQUEST, "Bad Request", d, vec![]),
            ApiError::NotFound(d) => (StatusCode::NOT_FOUND, "Not found", d, vec![]),
            ApiError::MeshNotFound(m) => (
                StatusCode::NOT_FOUND,
                "Failed to retrieve Mesh",
                format!("Not found: mesh {m:?} does not exist"),
                vec![],
            ),
            ApiError::Unauthenticated(d) => (StatusCode::UNAUTHORIZED, "Unauthorized", d, vec![]),
            ApiError::Forbidden(d) => (StatusCode::FORBIDDEN, "Access Denied", d, vec![]),
            ApiError::Conflict(d) => (StatusCode::CONFLICT, "Conflict", d, vec![]),
            ApiError::Internal(d) => {
                tracing::error!(error = %d, "API request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal server error",
                    d,
                    vec![],
                )
            }
        };
        let params: Vec<Value> = violations
            .iter()
            .map(|v| json!({"field": v.field, "reason": v.message}))
            .collect();
        let causes: Vec<Value> = violations
            .iter()
            .map(|v| json!({"field": v.field, "message": v.message}))
            .collect();
        let mut body = json!({
            "type": "/std-errors",
            "status": status.as_u16(),
            "title": title,
            "detail": detail,
            "details": detail,
        });
        if !violations.is_empty() {
            body["invalid_parameters"] = params.into();
            body["causes"] = causes.into();
        }
        (status, Json(body)).into_response()
    }
}

impl From<ResourceError> for ApiError {
    fn from(e: ResourceError) -> Self {
        match e {
            ResourceError::Invalid(v) => ApiError::Invalid(v),
            ResourceError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            ResourceError::Store(s @ StoreError::Conflict { .. }) => {
                ApiError::Conflict(s.to_string())
            }
            ResourceError::Store(s) => ApiError::Internal(s.to_string()),
            ResourceError::Vips { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// Kuma leaves out a field it has no value for (protobuf JSON) rather than
/// sending `null`: objects lose their null members, at every depth.
pub(super) fn omit_nulls(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|_, x| !x.is_null());
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// Kuma's index, with which instance answered and whether it leads (the
/// one that does the work done once).
async fn index(axum::extract::State(s): axum::extract::State<ApiState>) -> Json<Value> {
    Json(json!({
        "product": "Koguma",
        "tagline": "Koguma",
        "version": env!("CARGO_PKG_VERSION"),
        "instanceId": s.resources.instance(),
        "leader": s.resources.is_leader(),
    }))
}
