use std::time::SystemTime;

use anyhow::{anyhow, bail};
use http::Method;
use koguma_api::ResourceType;
use serde_json::Value;

use super::{ApiClient, describe_error, resource_path};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

pub async fn run(
    api: &ApiClient,
    kind: &str,
    name: Option<&str>,
    mesh: &str,
    output: Output,
) -> anyhow::Result<()> {
    let rtype = ResourceType::from_cli_name(kind).ok_or_else(|| {
        anyhow!(
            "unknown resource type {kind:?}: use {}",
            ResourceType::known_plurals()
        )
    })?;
    let (body, items) = match name {
        Some(n) => {
            let (status, body) = api
                .call(Method::GET, &resource_path(rtype, mesh, n), None)
                .await?;
            if !status.is_success() {
                bail!("{}", describe_error(status, &body));
            }
            (body.clone(), vec![body])
        }
        None => {
            let path = if rtype.is_mesh_scoped() {
                format!("/meshes/{mesh}/{}", rtype.plural())
            } else {
                format!("/{}", rtype.plural())
            };
            let items = api.list_all(&path).await?;
            let body = serde_json::json!({"total": items.len(), "items": items, "next": null});
            (body, items)
        }
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&body)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&body)?),
        Output::Table => {
            // Types with a table of their own; any other gets the generic one.
            let rows = match rtype {
                ResourceType::Mesh => mesh_rows(&items),
                ResourceType::Dataplane => dataplane_rows(api, mesh, &items).await?,
                ResourceType::MeshTrafficPermission => permission_rows(mesh, &items),
                ResourceType::Zone => zone_rows(api, &items).await?,
                ResourceType::ZoneIngress | ResourceType::ZoneEgress => zone_proxy_rows(&items),
                #[allow(unreachable_patterns)]
                _ => generic_rows(rtype, &items),
            };
            print_table(&rows);
        }
    }
    Ok(())
}

/// MESH (for mesh-scoped types), NAME, AGE.
fn generic_rows(rtype: ResourceType, items: &[Value]) -> Vec<Vec<String>> {
    let scoped = rtype.is_mesh_scoped();
    let mut header = vec!["NAME".to_string(), "AGE".to_string()];
    if scoped {
        header.insert(0, "MESH".into());
    }
    let mut rows = vec![header];
    for r in items {
        let mut row = vec![
            r["name"].as_str().unwrap_or_default().to_string(),
            age(&r["creationTime"]),
        ];
        if scoped {
            row.insert(0, r["mesh"].as_str().unwrap_or_default().to_string());
        }
        rows.push(row);
    }
    rows
}

/// NAME, STATUS (Online while a sync stream is open), LAST CONNECTED,
/// VERSION, AGE: from the global's `/zones+insights`.
async fn zone_rows(api: &ApiClient, items: &[Value]) -> anyhow::Result<Vec<Vec<String>>> {
    let mut rows = vec![vec![
        "NAME".into(),
        "STATUS".into(),
        "LAST CONNECTED".into(),
        "VERSION".into(),
        "AGE".into(),
    ]];
    for z in items {
        let name = z["name"].as_str().unwrap_or_default();
        let (status, overview) = api
            .call(Method::GET, &format!("/zones+insights/{name}"), None)
            .await?;
        let subs = if status.is_success() {
            overview["zoneInsight"]["subscriptions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        } else {
            vec![]
        };
        let last = subs.last();
        let online = last.is_some_and(|s| s["disconnectTime"].is_null());
        let enabled = overview["zone"]["enabled"].as_bool().unwrap_or(true);
        let status = match (enabled, online) {
            (false, _) => "Disabled",
            (true, true) => "Online",
            (true, false) => "Offline",
        };
        rows.push(vec![
            name.to_string(),
            status.into(),
            last.map_or("-".into(), |s| age(&s["connectTime"])),
            last.and_then(|s| s["version"]["kumaCp"]["version"].as_str())
                .unwrap_or("-")
                .to_string(),
            age(&z["creationTime"]),
        ]);
    }
    Ok(rows)
}

/// NAME, ZONE, ADDRESS, ADVERTISED, SERVICES (ingress), AGE.
fn zone_proxy_rows(items: &[Value]) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "NAME".into(),
        "ZONE".into(),
        "ADDRESS".into(),
        "ADVERTISED".into(),
        "SERVICES".into(),
        "AGE".into(),
    ]];
    for z in items {
        let net = &z["networking"];
        let addr = |a: &str, p: &str| match (net[a].as_str(), net[p].as_u64()) {
            (Some(a), Some(p)) => format!("{a}:{p}"),
            _ => "-".into(),
        };
        let services: u64 = z["availableServices"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["instances"].as_u64().unwrap_or(0))
            .sum();
        rows.push(vec![
            z["name"].as_str().unwrap_or_default().into(),
            z["zone"].as_str().unwrap_or("-").into(),
            addr("address", "port"),
            addr("advertisedAddress", "advertisedPort"),
            if z["type"] == "ZoneIngress" {
                format!("{services} instances")
            } else {
                "-".into()
            },
            age(&z["creationTime"]),
        ]);
    }
    rows
}

fn age(created: &Value) -> String {
    let Some(t) = created
        .as_str()
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
    else {
        return "-".into();
    };
    let secs = SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs());
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn mesh_rows(items: &[Value]) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "NAME".into(),
        "MTLS".into(),
        "PASSTHROUGH".into(),
        "AGE".into(),
    ]];
    for m in items {
        let passthrough = m["networking"]["outbound"]["passthrough"]
            .as_bool()
            .unwrap_or(true);
        let mtls = match m["mtls"]["enabledBackend"].as_str() {
            Some(b) if !b.is_empty() => {
                let backend = m["mtls"]["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|x| x["name"] == b);
                let mode = backend.and_then(|x| x["mode"].as_str()).unwrap_or("STRICT");
                format!("builtin/{b} ({mode})")
            }
            _ => "off".into(),
        };
        rows.push(vec![
            m["name"].as_str().unwrap_or_default().into(),
            mtls,
            if passthrough { "on" } else { "off" }.into(),
            age(&m["creationTime"]),
        ]);
    }
    rows
}

fn target_text(t: &Value) -> String {
    match t["kind"].as_str().unwrap_or("Mesh") {
        "MeshService" => format!("MeshService/{}", t["name"].as_str().unwrap_or_default()),
        "MeshSubset" => {
            let tags: Vec<String> = t["tags"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            format!("MeshSubset[{}]", tags.join(","))
        }
        other => other.to_string(),
    }
}

fn permission_rows(mesh: &str, items: &[Value]) -> Vec<Vec<String>> {
    let mut rows = vec![
        ["MESH", "NAME", "TARGET", "FROM", "AGE"]
            .map(String::from)
            .to_vec(),
    ];
    for p in items {
        let from: Vec<String> = p["spec"]["from"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                format!(
                    "{}:{}",
                    target_text(&f["targetRef"]),
                    f["default"]["action"].as_str().unwrap_or_default()
                )
            })
            .collect();
        rows.push(vec![
            mesh.to_string(),
            p["name"].as_str().unwrap_or_default().into(),
            target_text(&p["spec"]["targetRef"]),
            from.join(" "),
            age(&p["creationTime"]),
        ]);
    }
    rows
}

/// One row per dataplane, with its stream status from the insights list
/// (one request, however many dataplanes).
async fn dataplane_rows(
    api: &ApiClient,
    mesh: &str,
    items: &[Value],
) -> anyhow::Result<Vec<Vec<String>>> {
    let overviews = api
        .list_all(&format!("/meshes/{mesh}/dataplanes+insights"))
        .await?;
    let insights: std::collections::HashMap<&str, &Value> = overviews
        .iter()
        .filter_map(|o| Some((o["name"].as_str()?, &o["dataplaneInsight"])))
        .collect();
    let mut rows = vec![
        [
            "MESH",
            "NAME",
            "TAGS",
            "STATUS",
            "VERSION",
            "LAST REJECTION",
            "AGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for dp in items {
        let name = dp["name"].as_str().unwrap_or_default();
        let insight = insights.get(name).copied().unwrap_or(&Value::Null);
        let mut tags: Vec<String> = Vec::new();
        for inbound in dp["networking"]["inbound"].as_array().into_iter().flatten() {
            for (k, v) in inbound["tags"].as_object().into_iter().flatten() {
                tags.push(format!("{k}={}", v.as_str().unwrap_or_default()));
            }
        }
        tags.sort();
        tags.dedup();
        rows.push(vec![
            mesh.to_string(),
            name.to_string(),
            tags.join(" "),
            if insight["online"].as_bool().unwrap_or(false) {
                "Online"
            } else {
                "Offline"
            }
            .into(),
            insight["lastAckedVersion"].as_str().unwrap_or("-").into(),
            insight["lastRejection"]["reason"]
                .as_str()
                .unwrap_or("-")
                .into(),
            age(&dp["creationTime"]),
        ]);
    }
    Ok(rows)
}

/// Table cells longer than this are cut, with an ellipsis; `-o yaml` and
/// `-o json` print values whole. Long enough for a NACK's reason.
const MAX_CELL: usize = 200;

fn cell(value: &str) -> String {
    if value.chars().count() <= MAX_CELL {
        return value.to_string();
    }
    let mut cut: String = value.chars().take(MAX_CELL - 1).collect();
    cut.push('…');
    cut
}

fn table_lines(rows: &[Vec<String>]) -> Vec<String> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|v| v.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(v, w)| format!("{v}{}", " ".repeat(w - v.chars().count())))
                .collect();
            line.join("   ").trim_end().to_string()
        })
        .collect()
}

fn print_table(rows: &[Vec<String>]) {
    for line in table_lines(rows) {
        println!("{line}");
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn long_values_are_cut_in_tables_not_panicked_on() {
        let long = "v".repeat(70_000);
        let rows = vec![
            vec!["NAME".to_string(), "TAGS".to_string()],
            vec!["web-1".to_string(), format!("k={long}")],
            vec!["é".to_string(), "x".to_string()],
        ];
        let lines = table_lines(&rows);
        assert_eq!(lines.len(), 3);
        assert!(lines[1].ends_with('…'), "{}", lines[1]);
        assert_eq!(lines[1].chars().count(), "web-1".len() + 3 + MAX_CELL);
        assert_eq!(lines[2], "é       x");
    }
}
