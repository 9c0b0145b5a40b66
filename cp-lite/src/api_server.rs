//! The REST API, with Kuma's paths and JSON shapes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use koguma_api::{Resource, ResourceType, ValidationError, parse_documents};
use serde_json::{Value, json};

use crate::dp_server::status::StatusRegistry;
use crate::identity_api;
use crate::mesh_ca::MeshCas;
use crate::proxy_config::{self, ConfigSnapshot};
use crate::resources::{ResourceError, Resources};
use crate::store::{Origin, StoredResource};

#[derive(Clone)]
pub struct ApiState {
    pub resources: Arc<Resources>,
    pub status: Arc<StatusRegistry>,
    pub cas: Arc<MeshCas>,
    pub snapshots: tokio::sync::watch::Receiver<Arc<ConfigSnapshot>>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/meshes", get(list_meshes))
        .route(
            "/meshes/{name}",
            get(get_mesh).put(put_mesh).delete(delete_mesh),
        )
        .route("/meshes/{mesh}/dataplanes", get(list_dataplanes))
        .route(
            "/meshes/{mesh}/dataplanes/{name}",
            get(get_dataplane)
                .put(put_dataplane)
                .delete(delete_dataplane),
        )
        .route(
            "/meshes/{mesh}/dataplanes/{name}/_config",
            get(dataplane_config),
        )
        .route(
            "/meshes/{mesh}/meshtrafficpermissions",
            get(list_permissions),
        )
        .route(
            "/meshes/{mesh}/meshtrafficpermissions/{name}",
            get(get_permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route("/meshes/{mesh}/dataplanes+insights", get(list_overviews))
        .route("/tokens/dataplane", post(identity_api::dataplane_token))
        .route(
            "/meshes/{mesh}/workload-certificates",
            post(identity_api::workload_certificate),
        )
        .route(
            "/meshes/{mesh}/dataplanes+insights/{name}",
            get(get_overview),
        )
        .with_state(state)
}

/// Kuma's error body: `{"type", "status", "title", "detail", "invalid_parameters"}`.
pub enum ApiError {
    Invalid(ValidationError),
    NotFound(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, title, detail, params) = match self {
            ApiError::Invalid(e) => {
                let params: Vec<Value> = e
                    .violations
                    .iter()
                    .map(|v| json!({"field": v.field, "reason": v.message}))
                    .collect();
                (
                    StatusCode::BAD_REQUEST,
                    "Invalid request",
                    "Resource is not valid".to_string(),
                    params,
                )
            }
            ApiError::NotFound(d) => (StatusCode::NOT_FOUND, "Not found", d, vec![]),
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
        let body = json!({
            "type": "/std-errors",
            "status": status.as_u16(),
            "title": title,
            "detail": detail,
            "invalid_parameters": params,
        });
        (status, Json(body)).into_response()
    }
}

impl From<ResourceError> for ApiError {
    fn from(e: ResourceError) -> Self {
        match e {
            ResourceError::Invalid(v) => ApiError::Invalid(v),
            ResourceError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            ResourceError::Store(s) => ApiError::Internal(s.to_string()),
            ResourceError::Vips { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

async fn index() -> Json<Value> {
    Json(json!({"product": "Koguma", "tagline": "Koguma", "version": env!("CARGO_PKG_VERSION")}))
}

fn found(
    state: &ApiState,
    rtype: ResourceType,
    mesh: &str,
    name: &str,
) -> Result<Arc<StoredResource>, ApiError> {
    state
        .resources
        .catalog()
        .get(rtype, mesh, name)
        .cloned()
        .ok_or_else(|| {
            ApiError::NotFound(
                ResourceError::NotFound {
                    kind: rtype.kind(),
                    mesh: mesh.into(),
                    name: name.into(),
                }
                .to_string(),
            )
        })
}

fn list(
    state: &ApiState,
    rtype: ResourceType,
    mesh: Option<&str>,
    render: impl Fn(&StoredResource) -> Value,
) -> Response {
    let catalog = state.resources.catalog();
    let items: Vec<Value> = catalog.list(rtype, mesh).map(|r| render(r)).collect();
    Json(json!({"total": items.len(), "items": items, "next": null})).into_response()
}

fn put(state: &ApiState, rtype: ResourceType, mesh: &str, name: &str, body: &[u8]) -> ApiResult {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::Invalid(ValidationError::single("body", "is not UTF-8")))?;
    let mut docs = parse_documents(text)
        .map_err(|e| ApiError::Invalid(ValidationError::single("body", e.to_string())))?;
    if docs.len() != 1 {
        return Err(ApiError::Invalid(ValidationError::single(
            "body",
            format!("expected one resource, got {}", docs.len()),
        )));
    }
    let mut value = docs.remove(0);
    if rtype.is_mesh_scoped()
        && let Some(obj) = value.as_object_mut()
    {
        obj.entry("mesh").or_insert_with(|| mesh.into());
    }
    let resource = Resource::from_value(value).map_err(ApiError::Invalid)?;
    let mut errs = ValidationError::default();
    if resource.resource_type() != rtype {
        errs.add(
            "type",
            format!(
                "expected {}, got {}",
                rtype.kind(),
                resource.resource_type().kind()
            ),
        );
    }
    if resource.meta.name != name {
        errs.add(
            "name",
            format!(
                "the name in the URL ({name:?}) has to be the same as in the body ({:?})",
                resource.meta.name
            ),
        );
    }
    if rtype.is_mesh_scoped() && resource.meta.mesh != mesh {
        errs.add(
            "mesh",
            format!(
                "the mesh in the URL ({mesh:?}) has to be the same as in the body ({:?})",
                resource.meta.mesh
            ),
        );
    }
    errs.into_result().map_err(ApiError::Invalid)?;
    // A mesh that enables mTLS gets its CA before it is stored: if the CA
    // cannot be made, the mesh is left as it was.
    if let Some(backend) = resource.as_mesh().and_then(|m| m.mtls_backend()) {
        resource.validate().map_err(ApiError::Invalid)?;
        state
            .cas
            .get(name, backend)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    let (_, created) = state.resources.upsert(resource, Origin::Api)?;
    tracing::info!(kind = rtype.kind(), mesh, name, created, "resource applied");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({}))).into_response())
}

fn delete(state: &ApiState, rtype: ResourceType, mesh: &str, name: &str) -> ApiResult {
    state.resources.delete(rtype, mesh, name)?;
    tracing::info!(kind = rtype.kind(), mesh, name, "resource deleted");
    Ok(Json(json!({})).into_response())
}

async fn list_meshes(State(s): State<ApiState>) -> Response {
    list(&s, ResourceType::Mesh, None, |r| r.resource.to_value())
}

async fn get_mesh(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(
        found(&s, ResourceType::Mesh, "", &name)?
            .resource
            .to_value(),
    )
    .into_response())
}

async fn put_mesh(State(s): State<ApiState>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    put(&s, ResourceType::Mesh, "", &name, &body)
}

async fn delete_mesh(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let r = delete(&s, ResourceType::Mesh, "", &name);
    if r.is_ok() {
        s.cas.retain(|mesh, _| mesh != name);
    }
    r
}

async fn list_dataplanes(State(s): State<ApiState>, Path(mesh): Path<String>) -> Response {
    list(&s, ResourceType::Dataplane, Some(&mesh), |r| {
        r.resource.to_value()
    })
}

async fn get_dataplane(
    State(s): State<ApiState>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(
        found(&s, ResourceType::Dataplane, &mesh, &name)?
            .resource
            .to_value(),
    )
    .into_response())
}

async fn put_dataplane(
    State(s): State<ApiState>,
    Path((mesh, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    put(&s, ResourceType::Dataplane, &mesh, &name, &body)
}

async fn delete_dataplane(
    State(s): State<ApiState>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult {
    delete(&s, ResourceType::Dataplane, &mesh, &name)
}

async fn list_permissions(State(s): State<ApiState>, Path(mesh): Path<String>) -> Response {
    list(&s, ResourceType::MeshTrafficPermission, Some(&mesh), |r| {
        r.resource.to_value()
    })
}

async fn get_permission(
    State(s): State<ApiState>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult {
    let r = found(&s, ResourceType::MeshTrafficPermission, &mesh, &name)?;
    Ok(Json(r.resource.to_value()).into_response())
}

async fn put_permission(
    State(s): State<ApiState>,
    Path((mesh, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    put(&s, ResourceType::MeshTrafficPermission, &mesh, &name, &body)
}

async fn delete_permission(
    State(s): State<ApiState>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult {
    delete(&s, ResourceType::MeshTrafficPermission, &mesh, &name)
}

async fn dataplane_config(
    State(s): State<ApiState>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult {
    found(&s, ResourceType::Dataplane, &mesh, &name)?;
    // The config as of the latest published snapshot (at most one batching
    // window behind the write that preceded this request).
    let snapshot = s.snapshots.borrow().clone();
    let config = snapshot.compute(&mesh, &name, None).ok_or_else(|| {
        ApiError::NotFound(format!("Dataplane {name:?} has no networking section"))
    })?;
    Ok(Json(json!({"version": proxy_config::version(&config), "config": koguma_proto::json::proxy_config(&config)})).into_response())
}

fn overview(s: &ApiState, r: &StoredResource) -> Value {
    let meta = &r.resource.meta;
    let mut dataplane = r.resource.to_value();
    if let Some(obj) = dataplane.as_object_mut() {
        for k in [
            "type",
            "mesh",
            "name",
            "creationTime",
            "modificationTime",
            "labels",
        ] {
            obj.remove(k);
        }
    }
    let insight = s
        .status
        .get(&(meta.mesh.clone(), meta.name.clone()))
        .map_or_else(
            || json!({"online": false, "subscriptions": []}),
            |st| st.insight_json(),
        );
    json!({
        "type": "DataplaneOverview",
        "mesh": meta.mesh,
        "name": meta.name,
        "creationTime": meta.creation_time,
        "modificationTime": meta.modification_time,
        "dataplane": dataplane,
        "dataplaneInsight": insight,
    })
}

async fn list_overviews(State(s): State<ApiState>, Path(mesh): Path<String>) -> Response {
    list(&s, ResourceType::Dataplane, Some(&mesh), |r| {
        overview(&s, r)
    })
}

async fn get_overview(
    State(s): State<ApiState>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult {
    let r = found(&s, ResourceType::Dataplane, &mesh, &name)?;
    Ok(Json(overview(&s, &r)).into_response())
}
