//! GET, PUT, DELETE and lists for every registered resource type, at
//! Kuma's paths: `/meshes/{mesh}/{plural}[/{name}]` for mesh-scoped types,
//! `/{plural}[/{name}]` for global ones (and, for a mesh-scoped type, a
//! list across every mesh). Lists are paginated as Kuma's are.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use koguma_api::{Resource, ResourceType, Scope, ValidationError, parse_documents};
use serde_json::{Value, json};

use super::list_filter::ListFilter;
use super::{ApiError, ApiResult, ApiState};
use crate::resources::ResourceError;
use crate::store::Origin;

/// Kuma's page sizes.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

type Params = HashMap<String, String>;

/// The type and mesh a path names. `/meshes/{name}` has no `collection`.
fn target(params: &Params, item: bool) -> Result<(ResourceType, Option<String>), ApiError> {
    let collection = params.get("collection").map_or("meshes", String::as_str);
    let rtype = ResourceType::from_plural(collection).ok_or_else(|| {
        ApiError::NotFound(format!(
            "unknown resource type {collection:?}: expected {}",
            ResourceType::known_plurals()
        ))
    })?;
    let mesh = params.get("mesh").cloned();
    match (rtype.scope(), &mesh) {
        (Scope::Global, Some(_)) => Err(ApiError::NotFound(format!(
            "a {} is not mesh-scoped: use /{}",
            rtype.kind(),
            rtype.plural()
        ))),
        (Scope::Mesh, None) if item => Err(ApiError::NotFound(format!(
            "a {} is mesh-scoped: use /meshes/{{mesh}}/{}/{{name}}",
            rtype.kind(),
            rtype.plural()
        ))),
        _ => Ok((rtype, mesh)),
    }
}

fn name(params: &Params) -> &str {
    params.get("name").map_or("", String::as_str)
}

pub async fn get(State(s): State<ApiState>, Path(params): Path<Params>) -> ApiResult {
    let (rtype, mesh) = target(&params, true)?;
    let mesh = mesh.unwrap_or_default();
    let catalog = s.resources.catalog();
    if rtype.is_mesh_scoped() {
        mesh_exists(&catalog, &mesh)?;
    }
    let stored = catalog
        .get(rtype, &mesh, name(&params))
        .ok_or_else(|| not_found(rtype, &mesh, name(&params)))?;
    // The version, for a PUT that must not overwrite a change it has not
    // seen (`If-Match`).
    let etag = format!("\"{}\"", stored.version);
    Ok((
        [(axum::http::header::ETAG, etag)],
        Json(resource_json(&stored.resource)),
    )
        .into_response())
}

/// `If-Match: "<version>"`: the version a PUT may replace.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "If-Match: {value:?} is not a version this API served (an ETag such as \"42\")"
            ))
        })
}

/// A resource as the API serves it: its flat form and its `kri`.
pub fn resource_json(r: &Resource) -> Value {
    let mut v = r.to_value();
    if let (Some(kri), Some(obj)) = (r.kri(), v.as_object_mut()) {
        obj.insert("kri".into(), kri.into());
    }
    v
}

/// Kuma answers anything under a mesh that does not exist with a 404.
pub fn mesh_exists(catalog: &crate::catalog::Catalog, mesh: &str) -> Result<(), ApiError> {
    match catalog.mesh(mesh) {
        Some(_) => Ok(()),
        None => Err(ApiError::MeshNotFound(mesh.to_string())),
    }
}

/// The route pattern of a list, as Kuma's errors name it.
fn list_route(rtype: ResourceType, mesh: Option<&str>) -> String {
    match mesh {
        Some(_) => format!("/meshes/{{mesh}}/{}", rtype.plural()),
        None => format!("/{}", rtype.plural()),
    }
}

pub fn not_found(rtype: ResourceType, mesh: &str, name: &str) -> ApiError {
    ApiError::NotFound(
        ResourceError::NotFound {
            kind: rtype.kind(),
            mesh: mesh.into(),
            name: name.into(),
        }
        .to_string(),
    )
}

pub async fn list(
    State(s): State<ApiState>,
    Path(params): Path<Params>,
    Query(query): Query<Vec<(String, String)>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> ApiResult {
    let (rtype, mesh) = target(&params, false)?;
    let catalog = s.resources.catalog();
    if let Some(mesh) = &mesh {
        mesh_exists(&catalog, mesh)?;
    }
    let page = Page::from_query(&query)?;
    let filter = ListFilter::from_query(&list_route(rtype, mesh.as_deref()), rtype, &query)?;
    let items = catalog
        .list(rtype, mesh.as_deref())
        .filter(|r| filter.matches(&r.resource));
    Ok(page.render(items, |r| resource_json(&r.resource), &uri, &headers))
}

pub async fn put(
    State(s): State<ApiState>,
    Path(params): Path<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let (rtype, mesh) = target(&params, true)?;
    let if_version = if_match(&headers)?;
    let (mesh, name) = (mesh.unwrap_or_default(), name(&params));
    let text = std::str::from_utf8(&body)
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
    // Kuma looks at `type` before anything else: a body of another type
    // is refused whole, naming the one this URL takes.
    if value.get("type").and_then(Value::as_str) != Some(rtype.kind()) {
        return Err(ApiError::Invalid(ValidationError::single(
            "",
            format!("type in body should be one of [{}]", rtype.kind()),
        )));
    }
    if rtype.is_mesh_scoped()
        && let Some(obj) = value.as_object_mut()
    {
        obj.entry("mesh").or_insert_with(|| mesh.clone().into());
    }
    let resource = Resource::from_value(value).map_err(ApiError::Invalid)?;
    let mut errs = ValidationError::default();
    if rtype.is_mesh_scoped() && resource.meta.mesh != mesh {
        errs.add(
            "mesh",
            format!(
                "mesh from the URL has to be the same as in body (URL {mesh:?}, body {:?})",
                resource.meta.mesh
            ),
        );
    }
    if resource.meta.name != name {
        errs.add(
            "name",
            format!(
                "name from the URL has to be the same as in body (URL {name:?}, body {:?})",
                resource.meta.name
            ),
        );
    }
    errs.into_result().map_err(ApiError::Invalid)?;
    owned_here(&s, rtype, &mesh, name, &resource.meta.labels)?;
    // A mesh that enables mTLS gets its CA before it is stored: if the CA
    // cannot be made, the mesh is left as it was.
    if let Some(mesh_spec) = resource.as_mesh()
        && let Some(backend) = mesh_spec.mtls_backend()
    {
        resource.validate().map_err(ApiError::Invalid)?;
        // A provided CA is read again: its Secrets or file may have changed.
        s.cas.retain(|m, _| m != name);
        s.cas
            .get(name, backend)
            .await
            .map_err(|e| match e.provided_field() {
                Some((field, reason)) => {
                    let index = mesh_spec
                        .mtls
                        .as_ref()
                        .and_then(|m| m.backends.iter().position(|b| b.name == backend.name))
                        .unwrap_or(0);
                    ApiError::Invalid(ValidationError::single(
                        format!("mtls.backends[{index}].{field}"),
                        reason,
                    ))
                }
                None => ApiError::Internal(e.to_string()),
            })?;
    }
    let (_, created) = s
        .resources
        .upsert_if(resource, Origin::Api, if_version)
        .await?;
    if rtype == ResourceType::Secret {
        // A provided CA may be made of it: read again on next use.
        s.cas.retain(|m, _| m != mesh);
    }
    tracing::info!(kind = rtype.kind(), mesh, name, created, "resource applied");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({}))).into_response())
}

pub async fn delete(State(s): State<ApiState>, Path(params): Path<Params>) -> ApiResult {
    let (rtype, mesh) = target(&params, true)?;
    let (mesh, name) = (mesh.unwrap_or_default(), name(&params));
    owned_here(&s, rtype, &mesh, name, &Default::default())?;
    s.resources.delete(rtype, &mesh, name).await?;
    if rtype == ResourceType::Secret {
        s.cas.retain(|m, _| m != mesh);
    }
    if rtype == ResourceType::Mesh {
        // Its CA went with its secrets: forget the cached one.
        s.cas.retain(|m, _| m != name);
    }
    tracing::info!(kind = rtype.kind(), mesh, name, "resource deleted");
    Ok(Json(json!({})).into_response())
}

/// Refuses a change of a resource that originates on another control plane
/// (Kuma: a zone changes what it makes, the global what it makes). The
/// stored resource's labels decide; a new one's are `labels`.
fn owned_here(
    s: &ApiState,
    rtype: ResourceType,
    mesh: &str,
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let catalog = s.resources.catalog();
    let labels = catalog
        .get(rtype, mesh, name)
        .map_or(labels, |r| &r.resource.meta.labels);
    match s.resources.role().refuses_change(rtype, labels) {
        Some(why) => Err(ApiError::BadRequest(why)),
        None => Ok(()),
    }
}

/// `?size=&offset=` as Kuma reads them: at most 1000 a page, 100 unless
/// asked; the offset is where the next page starts.
pub struct Page {
    size: usize,
    offset: usize,
}

impl Page {
    pub fn from_query(query: &[(String, String)]) -> Result<Page, ApiError> {
        let get = |field: &str| query.iter().rev().find(|(k, _)| k == field).map(|(_, v)| v);
        let number = |field: &str, default: usize| match get(field) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().map_err(|_| {
                ApiError::InvalidQuery(ValidationError::single(
                    field,
                    format!("{v:?} is not a whole number"),
                ))
            }),
        };
        let size = number("size", DEFAULT_PAGE_SIZE)?;
        if size == 0 || size > MAX_PAGE_SIZE {
            return Err(ApiError::InvalidQuery(ValidationError::single(
                "size",
                if size == 0 {
                    format!("invalid page size of {size}: it must be at least 1")
                } else {
                    format!("invalid page size of {size}. Maximum page size is {MAX_PAGE_SIZE}")
                },
            )));
        }
        Ok(Page {
            size,
            offset: number("offset", 0)?,
        })
    }

    /// `{"total", "items", "next"}`; `next` is the URL of the next page, or
    /// null on the last one.
    pub fn render<T>(
        &self,
        items: impl Iterator<Item = T>,
        item_json: impl Fn(T) -> Value,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
    ) -> Response {
        let mut total = 0;
        let mut page = Vec::new();
        for item in items {
            if total >= self.offset && page.len() < self.size {
                page.push(item_json(item));
            }
            total += 1;
        }
        let end = self.offset + page.len();
        let next = (end < total).then(|| {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            // The same query (filters included), moved on by one page.
            let mut next = format!(
                "http://{host}{}?offset={end}&size={}",
                uri.path(),
                self.size
            );
            for pair in uri.query().unwrap_or("").split('&') {
                let key = pair.split('=').next().unwrap_or("");
                if !pair.is_empty() && key != "offset" && key != "size" {
                    next.push('&');
                    next.push_str(pair);
                }
            }
            next
        });
        Json(json!({"total": total, "items": page, "next": next})).into_response()
    }
}
