//! A stored row read back into a resource: the same for every backend.

use koguma_api::Resource;

use super::{Origin, StoreError, StoredResource};

/// The columns of the `resources` table, in order.
pub const COLUMNS: &str =
    "type, mesh, name, spec, labels, origin, version, creation_time, modification_time";

/// The columns of the `sessions` table, in the order both backends read them.
pub const SESSION_COLUMNS: &str = "mesh, name, type, instance, draining, connect_time";

pub struct Row {
    pub kind: String,
    pub mesh: String,
    pub name: String,
    pub spec: String,
    pub labels: String,
    pub origin: String,
    pub version: i64,
    pub created: String,
    pub modified: String,
}

impl Row {
    pub fn decode(self) -> Result<StoredResource, StoreError> {
        let Row {
            kind,
            mesh,
            name,
            spec,
            labels,
            origin,
            version,
            created,
            modified,
        } = self;
        let corrupt = |reason: String| StoreError::Corrupt {
            kind: kind.clone(),
            mesh: mesh.clone(),
            name: name.clone(),
            reason,
        };
        let mut obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
        obj.insert("type".into(), kind.clone().into());
        obj.insert("name".into(), name.clone().into());
        if !mesh.is_empty() {
            obj.insert("mesh".into(), mesh.clone().into());
        }
        let labels: serde_json::Value =
            serde_json::from_str(&labels).map_err(|e| corrupt(e.to_string()))?;
        obj.insert("labels".into(), labels);
        obj.insert("creationTime".into(), created.into());
        obj.insert("modificationTime".into(), modified.into());
        let resource = Resource::from_value(serde_json::Value::Object(obj))
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(StoredResource {
            resource,
            origin: Origin::parse(&origin),
            version,
        })
    }
}

/// What a resource is stored as: its spec and labels, as JSON text.
pub fn encode(resource: &Resource) -> (String, String) {
    (
        resource.spec_value().to_string(),
        serde_json::json!(resource.meta.labels).to_string(),
    )
}
