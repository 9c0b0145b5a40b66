use anyhow::{anyhow, bail};
use http::Method;
use koguma_api::ResourceType;

use super::{ApiClient, describe_error, resource_path};

pub async fn run(api: &ApiClient, kind: &str, name: &str, mesh: &str) -> anyhow::Result<()> {
    let rtype = ResourceType::from_cli_name(kind)
        .ok_or_else(|| anyhow!("unknown resource type {kind:?}: use mesh or dataplane"))?;
    let (status, body) = api
        .call(Method::DELETE, &resource_path(rtype, mesh, name), None)
        .await?;
    if !status.is_success() {
        bail!("{}", describe_error(status, &body));
    }
    println!("deleted {} {name:?}", rtype.kind());
    Ok(())
}
