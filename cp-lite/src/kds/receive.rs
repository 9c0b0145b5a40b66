//! The receiving half of a side: storing what the other side sent, and
//! removing what it no longer has. Only copies are ever removed, never a
//! resource that originates here; the error of each is a NACK's reason.

use koguma_api::{Resource, ResourceType};
use koguma_proto::v1::{KdsKey, KdsResource};

use super::LocalState;
use super::hash::hashed_name;
use super::side::{INSIGHT, SECRET, Side};
use crate::role::{DISPLAY_NAME_LABEL, ORIGIN_LABEL, ZONE_LABEL};
use crate::store::Origin;
use crate::tokens;

impl Side {
    /// The name the other side's `key` has here: Kuma's hashed name on the
    /// global (zones' names meet there), the global's name on a zone.
    fn local_name(&self, key: &KdsKey) -> String {
        match self {
            Side::Global(zone) => hashed_name(&key.mesh, &key.name, zone),
            Side::Zone => key.name.clone(),
        }
    }

    /// Stores what the other side sent. The error is the NACK's reason.
    pub async fn store(&self, local: &LocalState, r: &KdsResource) -> Result<(), String> {
        let resources = &local.resources;
        let key = r.key.as_ref().ok_or("the resource has no key")?;
        if key.r#type == SECRET {
            return self.store_secret(local, key, &r.spec).await;
        }
        if key.r#type == INSIGHT {
            return self.store_insight(local, key, &r.spec, &r.version);
        }
        let rtype = resource_type(key)?;
        let mut labels = r.labels.clone();
        match self {
            Side::Global(zone) => {
                if !rtype.kds_sync().zone_sends() {
                    return Err(format!(
                        "a zone does not send {} resources: they are the global's",
                        rtype.kind()
                    ));
                }
                labels.insert(ORIGIN_LABEL.into(), "zone".into());
                labels.insert(ZONE_LABEL.into(), zone.clone());
                labels.insert(DISPLAY_NAME_LABEL.into(), key.name.clone());
            }
            Side::Zone => {
                if !rtype.kds_sync().global_sends() {
                    return Err(format!(
                        "the global does not send {} resources to zones",
                        rtype.kind()
                    ));
                }
                labels
                    .entry(ORIGIN_LABEL.into())
                    .or_insert_with(|| "global".into());
            }
        }
        let mut obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&r.spec).map_err(|e| format!("the spec is not JSON: {e}"))?;
        obj.insert("type".into(), rtype.kind().into());
        obj.insert("name".into(), self.local_name(key).into());
        if rtype.is_mesh_scoped() {
            obj.insert("mesh".into(), key.mesh.clone().into());
        }
        obj.insert("labels".into(), serde_json::json!(labels));
        let resource =
            Resource::from_value(serde_json::Value::Object(obj)).map_err(|e| e.to_string())?;
        resources
            .upsert(resource, Origin::Kds)
            .await
            .map_err(|e| e.to_string())?;
        // A provided CA is made of the mesh and its Secrets.
        match rtype {
            ResourceType::Secret => local.cas.retain(|m, _| m != key.mesh),
            ResourceType::Mesh => local.cas.retain(|m, _| m != key.name),
            _ => {}
        }
        Ok(())
    }

    async fn store_secret(
        &self,
        local: &LocalState,
        key: &KdsKey,
        data: &str,
    ) -> Result<(), String> {
        let (resources, cas) = (&local.resources, &local.cas);
        // Only a zone takes secrets, and only those it needs: the public
        // keys that check zone proxies' and users' tokens, and each mesh's own.
        if let Side::Global(_) = self {
            return Err("a zone does not send secrets".into());
        }
        if key.mesh.is_empty() && tokens::is_synced_public_key(&key.name) {
            return resources
                .replace_secret("", &key.name, data)
                .await
                .map_err(|e| e.to_string());
        }
        let catalog = resources.catalog();
        let Some(spec) = catalog.mesh(&key.mesh) else {
            return Err(format!("mesh {:?} does not exist", key.mesh));
        };
        let is_ca = key.name.starts_with(&format!("{}.ca-builtin-", key.mesh));
        let taken = Self::synced_secret_names(cas, &key.mesh, Some(spec)).contains(&key.name);
        drop(catalog);
        if !is_ca && !taken {
            return Err(format!(
                "secret {:?} is not one a zone takes for mesh {:?}",
                key.name, key.mesh
            ));
        }
        resources
            .replace_secret(&key.mesh, &key.name, data)
            .await
            .map_err(|e| e.to_string())?;
        cas.retain(|m, _| m != key.mesh);
        Ok(())
    }

    /// Removes what the other side no longer has. Only copies are ever
    /// removed: never a resource that originates here.
    pub async fn remove(&self, local: &LocalState, key: &KdsKey) -> Result<(), String> {
        let resources = &local.resources;
        if key.r#type == SECRET {
            // A mesh's secrets go with the mesh.
            return Ok(());
        }
        if key.r#type == INSIGHT {
            if let Side::Global(_) = self {
                local
                    .remote_insights
                    .remove(&key.mesh, &self.local_name(key));
            }
            return Ok(());
        }
        let rtype = resource_type(key)?;
        let name = self.local_name(key);
        let catalog = resources.catalog();
        let Some(stored) = catalog.get(rtype, &key.mesh, &name) else {
            return Ok(());
        };
        let zone_matches = match self {
            Side::Global(zone) => stored.resource.meta.labels.get(ZONE_LABEL) == Some(zone),
            Side::Zone => true,
        };
        if stored.origin != Origin::Kds || !zone_matches {
            return Ok(());
        }
        drop(catalog);
        match resources.delete(rtype, &key.mesh, &name).await {
            Ok(()) => Ok(()),
            Err(crate::resources::ResourceError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn store_insight(
        &self,
        local: &LocalState,
        key: &KdsKey,
        json: &str,
        version: &str,
    ) -> Result<(), String> {
        let Side::Global(zone) = self else {
            return Err("the global does not send dataplane insights".into());
        };
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("the insight is not JSON: {e}"))?;
        let name = self.local_name(key);
        local
            .remote_insights
            .put(&key.mesh, &name, zone, &key.name, value, version);
        Ok(())
    }
}

fn resource_type(key: &KdsKey) -> Result<ResourceType, String> {
    ResourceType::from_kind(&key.r#type).ok_or_else(|| format!("unknown type {:?}", key.r#type))
}
