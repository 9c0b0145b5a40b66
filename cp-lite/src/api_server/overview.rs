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
use std::collections::HashMap;

use crate::catalog::DataplaneKey;
use crate::instances::INSTANCE_SILENCE;
use crate::store::{Session, StoredResource};

/// Dataplanes whose streams other instances serve, with whether that
/// instance is alive: what this instance knows of them.
type Elsewhere = HashMap<DataplaneKey, (Session, bool)>;

async fn served_elsewhere(s: &ApiState) -> Elsewhere {
    let Some(_) = s.resources.leadership() else {
        return Elsewhere::new(); // one instance: every stream is here
    };
    let (Ok(sessions), Ok(live)) = (
        s.resources.sessions().await,
        s.resources.live_instances(INSTANCE_SILENCE).await,
    ) else {
        return Elsewhere::new();
    };
    sessions
        .into_iter()
        .filter(|session| session.instance != s.resources.instance())
        .map(|session| {
            let alive = live.contains(&session.instance);
            (session.key.clone(), (session, alive))
        })
        .collect()
}

/// What an instance that does not serve a dataplane's stream says of it:
/// which instance does, since when, and whether it is online there.
fn insight_elsewhere(session: &Session, alive: bool) -> Value {
    json!({
        "online": alive && !session.draining,
        "subscriptions": [{
            "controlPlaneInstanceId": session.instance,
            "connectTime": session.connect_time,
        }],
    })
}

fn overview(s: &ApiState, r: &StoredResource, elsewhere: &Elsewhere) -> Value {
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
    let key = (meta.mesh.clone(), meta.name.clone());
    // A stream open here wins; then another instance's; then what this
    // instance last knew of the dataplane.
    let insight = match (s.status.get(&key), elsewhere.get(&key)) {
        (Some(st), _) if st.online => st.insight_json(s.resources.instance()),
        (_, Some((session, alive))) => insight_elsewhere(session, *alive),
        (Some(st), None) => st.insight_json(s.resources.instance()),
        (None, None) => remote_or_offline(s, &meta.mesh, &meta.name),
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

/// On the global: as the dataplane's zone last reported it, and offline
/// while that zone is (its last word may be stale).
fn remote_or_offline(s: &ApiState, mesh: &str, name: &str) -> Value {
    match s.remote_insights.get(mesh, name) {
        Some((zone, mut insight)) => {
            if !s.zones.is_online(&zone) {
                insight["online"] = false.into();
            }
            insight
        }
        None => json!({"online": false, "subscriptions": []}),
    }
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
    let elsewhere = served_elsewhere(&s).await;
    Ok(page.render(items, |r| overview(&s, r, &elsewhere), &uri, &headers))
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
    let elsewhere = served_elsewhere(&s).await;
    Ok(Json(overview(&s, r, &elsewhere)).into_response())
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
        && let Ok(ca) = s.cas.get(&mesh, backend).await
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
