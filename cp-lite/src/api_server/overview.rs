//! Kuma's views of dataplanes: overviews (the resource with its insight:
//! online, versions, certificate) and the config a dataplane is sent.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use koguma_api::ResourceType;
use serde_json::{Value, json};

use super::list_filter::ListFilter;
use super::resources::{Page, mesh_exists, not_found};
use super::{ApiError, ApiResult, ApiState, omit_nulls};
use crate::store::StoredResource;

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
    let offline = || json!({"online": false, "subscriptions": []});
    let insight = match s.status.get(&(meta.mesh.clone(), meta.name.clone())) {
        Some(st) => st.insight_json(),
        // On the global: as the dataplane's zone last reported it, and
        // offline while that zone is (its last word may be stale).
        None => match s.remote_insights.get(&meta.mesh, &meta.name) {
            Some((zone, mut insight)) => {
                if !s.zones.is_online(&zone) {
                    insight["online"] = false.into();
                }
                insight
            }
            None => offline(),
        },
    };
    let mut out = json!({
        "type": "DataplaneOverview",
        "mesh": meta.mesh,
        "name": meta.name,
        "creationTime": meta.creation_time,
        "modificationTime": meta.modification_time,
        "dataplane": dataplane,
        "dataplaneInsight": insight,
    });
    if !meta.labels.is_empty() {
        out["labels"] = json!(meta.labels);
    }
    if let Some(kri) = r.resource.kri() {
        out["kri"] = kri.into();
    }
    omit_nulls(out)
}

pub async fn list(
    State(s): State<ApiState>,
    Path(mesh): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> ApiResult {
    let catalog = s.resources.catalog();
    mesh_exists(&catalog, &mesh)?;
    let page = Page::from_query(&query)?;
    let filter = ListFilter::from_query(
        "/meshes/{mesh}/dataplanes+insights",
        ResourceType::Dataplane,
        &query,
    )?;
    let items = catalog
        .list(ResourceType::Dataplane, Some(&mesh))
        .filter(|r| filter.matches(&r.resource));
    Ok(page.render(items, |r| overview(&s, r), &uri, &headers))
}

pub async fn get(
    State(s): State<ApiState>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult {
    let catalog = s.resources.catalog();
    mesh_exists(&catalog, &mesh)?;
    let r = catalog
        .get(ResourceType::Dataplane, &mesh, &name)
        .ok_or_else(|| not_found(ResourceType::Dataplane, &mesh, &name))?;
    Ok(Json(overview(&s, r)).into_response())
}

pub async fn config(
    State(s): State<ApiState>,
    Path((mesh, name)): Path<(String, String)>,
) -> ApiResult {
    if s.resources
        .catalog()
        .get(ResourceType::Dataplane, &mesh, &name)
        .is_none()
    {
        return Err(not_found(ResourceType::Dataplane, &mesh, &name));
    }
    // The config as of the latest published snapshot (at most one batching
    // window behind the write that preceded this request).
    // Built as the dataplane's own stream builds it: with its agent's
    // transparent proxying, the mesh CA and the certificate issued to it,
    // so that the version is the one the agent ACKs when it is up to date.
    let snapshot = s.snapshots.borrow().clone();
    let stream = s.status.get(&(mesh.clone(), name.clone()));
    let node_tp = stream.as_ref().and_then(|st| st.node_tp.as_ref());
    let mut config = snapshot.compute(&mesh, &name, node_tp).ok_or_else(|| {
        ApiError::NotFound(format!("Dataplane {name:?} has no networking section"))
    })?;
    let backend = snapshot.catalog.mesh(&mesh).and_then(|m| m.mtls_backend());
    if let (Some(mtls), Some(backend)) = (config.mtls.as_mut(), backend)
        && let Ok(ca) = s.cas.get(&mesh, backend)
    {
        ca.fill(mtls, stream.as_ref().and_then(|st| st.cert_der.as_deref()));
    }
    Ok(Json(json!({
        "version": koguma_proto::version(&config),
        "ackedVersion": stream.as_ref().and_then(|st| st.acked_version.clone()),
        "config": koguma_proto::json::proxy_config(&config),
    }))
    .into_response())
}
