//! Kuma's zone views on the global: `/zones+insights[/{name}]`, each Zone
//! with its insight (the zone's sync streams). A zone is online while its
//! newest stream is open.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use koguma_api::ResourceType;
use serde_json::{Value, json};

use super::list_filter::ListFilter;
use super::resources::{Page, not_found};
use super::{ApiResult, ApiState, omit_nulls};
use crate::store::StoredResource;

fn overview(s: &ApiState, r: &StoredResource) -> Value {
    let meta = &r.resource.meta;
    let enabled = r.resource.as_zone().is_none_or(|z| z.is_enabled());
    omit_nulls(json!({
        "type": "ZoneOverview",
        "name": meta.name,
        "creationTime": meta.creation_time,
        "modificationTime": meta.modification_time,
        "zone": {"enabled": enabled},
        "zoneInsight": s.zones.insight_json(&meta.name),
    }))
}

pub async fn list(
    State(s): State<ApiState>,
    Query(query): Query<Vec<(String, String)>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> ApiResult {
    let page = Page::from_query(&query)?;
    let filter = ListFilter::from_query("/zones+insights", ResourceType::Zone, &query)?;
    let catalog = s.resources.catalog();
    let items = catalog
        .list(ResourceType::Zone, None)
        .filter(|r| filter.matches(&r.resource));
    Ok(page.render(items, |r| overview(&s, r), &uri, &headers))
}

pub async fn get(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let catalog = s.resources.catalog();
    let r = catalog
        .get(ResourceType::Zone, "", &name)
        .ok_or_else(|| not_found(ResourceType::Zone, "", &name))?;
    Ok(Json(overview(&s, r)).into_response())
}
