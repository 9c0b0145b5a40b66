//! Who is on the other end of a stream: a Dataplane registered from the
//! agent's template, or one that already exists on the CP.

use koguma_api::{Resource, ResourceType};
use koguma_proto::v1::Node;
use tonic::Status;

use crate::catalog::DataplaneKey;
use crate::resources::{ResourceError, Resources};
use crate::store::Origin;

pub fn register(resources: &Resources, node: &Node) -> Result<(DataplaneKey, Origin), Status> {
    if node.dataplane_json.is_empty() {
        let exists = resources
            .catalog()
            .get(ResourceType::Dataplane, &node.mesh, &node.name)
            .is_some();
        if !exists {
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
    match resources.upsert(resource, Origin::Agent) {
        Ok(_) => Ok((key, Origin::Agent)),
        Err(ResourceError::Invalid(e)) => {
            Err(Status::invalid_argument(format!("invalid Dataplane: {e}")))
        }
        Err(e) => Err(Status::internal(e.to_string())),
    }
}
