use anyhow::{Context, anyhow, bail};
use http::Method;
use koguma_api::{ResourceType, parse_documents, read_source};

use super::{ApiClient, describe_error, resource_path};

/// Applies every document of `file` (`-` = stdin) in order; stops at the
/// first one the CP refuses, which is then not stored.
pub async fn run(api: &ApiClient, file: &str) -> anyhow::Result<()> {
    let text = read_source(file).with_context(|| {
        if file == "-" {
            "cannot read stdin".to_string()
        } else {
            format!("cannot read {file}")
        }
    })?;
    let docs = parse_documents(&text).map_err(|e| anyhow!("{file}: {e}"))?;
    if docs.is_empty() {
        bail!("{file}: no resource found");
    }
    for (i, doc) in docs.into_iter().enumerate() {
        let kind = doc["type"].as_str().unwrap_or_default();
        let rtype = ResourceType::from_kind(kind).ok_or_else(|| {
            anyhow!(
                "{file}: document {}: type: unknown type {kind:?}: expected Mesh or Dataplane",
                i + 1
            )
        })?;
        let name = doc["name"].as_str().unwrap_or_default().to_string();
        let mesh = doc["mesh"].as_str().unwrap_or("default").to_string();
        if name.is_empty() {
            bail!("{file}: document {}: name: cannot be empty", i + 1);
        }
        let path = resource_path(rtype, &mesh, &name);
        let (status, body) = api
            .call(Method::PUT, &path, Some(serde_json::to_vec(&doc)?))
            .await?;
        if !status.is_success() {
            bail!(
                "{kind} {name:?} was not applied: {}",
                describe_error(status, &body)
            );
        }
        let verb = if status == http::StatusCode::CREATED {
            "created"
        } else {
            "configured"
        };
        println!("{kind} {name:?} {verb}");
    }
    Ok(())
}
