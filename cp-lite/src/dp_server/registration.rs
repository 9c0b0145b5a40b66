//! Who is on the other end of a stream: a Dataplane registered from the
//! agent's template, or one that already exists on the CP.

use koguma_api::{DataplaneSpec, Resource, ResourceType};
use koguma_proto::v1::Node;
use tonic::Status;

use crate::catalog::DataplaneKey;
use crate::resources::{ResourceError, Resources};
use crate::store::Origin;
use crate::tokens::{self, dataplane as dp_token};

/// How agents prove which dataplane they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DpAuth {
    /// A dataplane token from `koguma-cp generate dataplane-token`.
    DpToken,
    /// No proof: any agent may register any dataplane. Local experiments only.
    None,
}

/// Refuses the dataplane unless `token` is valid and allows it. Nothing is
/// registered before this passes.
async fn check_token(
    resources: &Resources,
    auth: DpAuth,
    token: Option<&str>,
    mesh: &str,
    name: &str,
    dp: &DataplaneSpec,
) -> Result<(), Status> {
    if auth == DpAuth::None {
        return Ok(());
    }
    let result = match token {
        Some(t) => dp_token::verify(resources, mesh, t).await,
        None => Err(tokens::TokenError::Missing(
            "no dataplane token was presented: run koguma-dp with --dataplane-token-file",
        )),
    }
    .and_then(|claims| dp_token::authorize(&claims, mesh, name, dp));
    result.map_err(|e| match e {
        tokens::TokenError::Store(s) => Status::internal(s.to_string()),
        e => Status::permission_denied(format!(
            "dataplane {name:?} in mesh {mesh:?} is not allowed to register: {e}"
        )),
    })
}

pub async fn register(
    resources: &Resources,
    auth: DpAuth,
    token: Option<&str>,
    node: &Node,
) -> Result<(DataplaneKey, Origin), Status> {
    if node.dataplane_json.is_empty() {
        let catalog = resources.catalog();
        let existing = catalog
            .get(ResourceType::Dataplane, &node.mesh, &node.name)
            .and_then(|r| r.resource.as_dataplane());
        if let Some(dp) = existing {
            check_token(resources, auth, token, &node.mesh, &node.name, dp).await?;
        } else {
            // Say nothing of what exists to an agent that cannot prove who it is.
            check_token(
                resources,
                auth,
                token,
                &node.mesh,
                &node.name,
                &DataplaneSpec::default(),
            )
            .await?;
            return Err(Status::not_found(format!(
                "Dataplane {:?} not found in mesh {:?}: create it with `koguma-cp apply` or run koguma-dp with --dataplane-file",
                node.name, node.mesh
            )));
        }
        return Ok(((node.mesh.clone(), node.name.clone()), Origin::Api));
    }
    let value: serde_json::Value = serde_json::from_str(&node.dataplane_json).map_err(|e| {
        Status::invalid_argument(format!("the dataplane resource is not valid JSON: {e}"))
    })?;
    let resource = Resource::from_value(value)
        .map_err(|e| Status::invalid_argument(format!("invalid Dataplane: {e}")))?;
    if resource.resource_type() != ResourceType::Dataplane {
        return Err(Status::invalid_argument(format!(
            "type: expected Dataplane, got {}",
            resource.resource_type().kind()
        )));
    }
    let key = (resource.meta.mesh.clone(), resource.meta.name.clone());
    if let Some(dp) = resource.as_dataplane() {
        check_token(resources, auth, token, &key.0, &key.1, dp).await?;
    }
    if let Some(existing) = resources
        .catalog()
        .get(ResourceType::Dataplane, &key.0, &key.1)
        && existing.origin == Origin::Api
        && existing.resource.spec != resource.spec
    {
        return Err(Status::already_exists(format!(
            "Dataplane {:?} in mesh {:?} was created through the API with another spec: \
             run koguma-dp with --name/--mesh to use it, or delete it first",
            key.1, key.0
        )));
    }
    match resources.upsert(resource, Origin::Agent).await {
        Ok(_) => Ok((key, Origin::Agent)),
        Err(ResourceError::Invalid(e)) => {
            Err(Status::invalid_argument(format!("invalid Dataplane: {e}")))
        }
        Err(e) => Err(Status::internal(e.to_string())),
    }
}
