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
        anyhow!("unknown resource type {kind:?}: use meshes, dataplanes or meshtrafficpermissions")
    })?;
    let path = match name {
        Some(n) => resource_path(rtype, mesh, n),
        None if rtype.is_mesh_scoped() => format!("/meshes/{mesh}/{}", rtype.plural()),
        None => format!("/{}", rtype.plural()),
    };
    let (status, body) = api.call(Method::GET, &path, None).await?;
    if !status.is_success() {
        bail!("{}", describe_error(status, &body));
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&body)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&body)?),
        Output::Table => {
            let items = if name.is_some() {
                vec![body]
            } else {
                body["items"].as_array().cloned().unwrap_or_default()
            };
            let rows = match rtype {
                ResourceType::Mesh => mesh_rows(&items),
                ResourceType::Dataplane => dataplane_rows(api, mesh, &items).await?,
                ResourceType::MeshTrafficPermission => permission_rows(mesh, &items),
            };
            print_table(&rows);
        }
    }
    Ok(())
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
    let (_, overviews) = api
        .call(
            Method::GET,
            &format!("/meshes/{mesh}/dataplanes+insights"),
            None,
        )
        .await?;
    let insights: std::collections::HashMap<&str, &Value> = overviews["items"]
        .as_array()
        .into_iter()
        .flatten()
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

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}
