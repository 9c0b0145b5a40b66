//! Service VIPs: handed out by the leader only (two instances would give
//! one address twice), as services arrive through this instance's writes
//! or through the change feed, and kept with the mesh's secrets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use koguma_api::ResourceType;

use super::{ResourceError, Resources};
use crate::catalog::{Catalog, ResourceKey};
use crate::vips::{self, VipMap};

impl Resources {
    /// Gives the services named, by mesh, that have none a VIP, one map per
    /// mesh (so that services of one mesh arriving together do not start
    /// from the same map), and stores each new map; returns them, for the
    /// caller to publish. Meshes that do not exist are skipped. Only the
    /// leader allocates: two instances would hand out one address twice.
    pub(super) async fn allocate_vips(
        &self,
        catalog: &Catalog,
        by_mesh: BTreeMap<String, BTreeSet<&str>>,
    ) -> Result<Vec<(String, Arc<VipMap>)>, ResourceError> {
        let mut maps = Vec::new();
        for (mesh, services) in by_mesh {
            if catalog.mesh(&mesh).is_some()
                && let Some(map) = self.allocate_mesh_vips(catalog, &mesh, services).await?
            {
                maps.push((mesh, map));
            }
        }
        Ok(maps)
    }

    /// One mesh's new map, stored; `None` when nothing changed. Running out
    /// of addresses is logged, not fatal (as in Kuma): such a service has no
    /// name.
    async fn allocate_mesh_vips(
        &self,
        catalog: &Catalog,
        mesh: &str,
        services: BTreeSet<&str>,
    ) -> Result<Option<Arc<VipMap>>, ResourceError> {
        let mut map = catalog
            .vips
            .get(mesh)
            .map(|m| VipMap::clone(m))
            .unwrap_or_default();
        let changed = match vips::allocate(&mut map, services) {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(mesh, error = %e, "VIP allocation failed");
                return Ok(None);
            }
        };
        if !changed {
            return Ok(None);
        }
        self.store
            .put_secret(mesh, &vips::record_name(mesh), &vips::render(&map))
            .await?;
        tracing::info!(mesh, vips = map.len(), "service VIPs allocated");
        Ok(Some(Arc::new(map)))
    }

    /// Every service of every mesh that has no VIP gets one: what a new
    /// leader does first (services may have come through other instances).
    pub async fn allocate_all_vips(&self) -> Result<(), ResourceError> {
        let _guard = self.lock().await;
        let catalog = self.catalog();
        let by_mesh = catalog
            .list(ResourceType::Mesh, None)
            .map(|m| &m.resource.meta.name)
            .map(|mesh| (mesh.clone(), catalog.services(mesh)))
            .collect();
        let maps = self.allocate_vips(&catalog, by_mesh).await?;
        self.publish_vips(maps);
        Ok(())
    }

    fn publish_vips(&self, maps: Vec<(String, Arc<VipMap>)>) {
        if !maps.is_empty() {
            self.publish(|c| c.vips.extend(maps));
        }
    }

    pub(super) async fn read_vips(&self, mesh: &str) -> Result<VipMap, ResourceError> {
        match self.store.secret(mesh, &vips::record_name(mesh)).await? {
            Some(json) => vips::parse(&json).map_err(|reason| ResourceError::Vips {
                mesh: mesh.to_string(),
                reason,
            }),
            None => Ok(VipMap::new()),
        }
    }

    pub(super) async fn allocate_vips_for(
        &self,
        keys: &[ResourceKey],
    ) -> Result<(), ResourceError> {
        let _guard = self.lock().await;
        let catalog = self.catalog();
        let mut by_mesh: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for stored in keys.iter().filter_map(|k| catalog.get(k.0, &k.1, &k.2)) {
            for (mesh, services) in catalog.services_named_by(&stored.resource) {
                by_mesh.entry(mesh).or_default().extend(services);
            }
        }
        let maps = self.allocate_vips(&catalog, by_mesh).await?;
        self.publish_vips(maps);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::role::Role;
    use crate::store::{Origin, SqliteStore, StoredResource};

    fn dataplane(name: &str, service: &str) -> Arc<StoredResource> {
        let resource = koguma_api::Resource::from_value(serde_json::json!({
            "type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": "10.0.0.1", "inbound": [
                {"port": 8080, "servicePort": 18080, "tags": {"kuma.io/service": service}}
            ]}
        }))
        .expect("dataplane");
        Arc::new(StoredResource {
            resource,
            origin: Origin::Api,
            version: 1,
        })
    }

    /// Two new services arriving in one batch of the change feed, as
    /// another instance wrote them: each gets an address of its own, and
    /// the stored map keeps both.
    #[tokio::test]
    async fn services_arriving_together_get_distinct_vips() {
        let store = SqliteStore::in_memory().expect("store");
        let r = Resources::open(Box::new(store), Role::Standalone, "test")
            .await
            .expect("resources");
        r.publish(|c| {
            c.insert(dataplane("a-1", "alpha"));
            c.insert(dataplane("b-1", "beta"));
        });
        let keys: Vec<ResourceKey> = ["a-1", "b-1"]
            .iter()
            .map(|n| (ResourceType::Dataplane, "default".into(), n.to_string()))
            .collect();
        r.allocate_vips_for(&keys).await.expect("allocate");
        let vip = |s: &str| r.catalog().vips.get("default")?.get(s).copied();
        assert_eq!(vip("alpha"), Some(Ipv4Addr::new(240, 0, 0, 0)));
        assert_eq!(vip("beta"), Some(Ipv4Addr::new(240, 0, 0, 1)));
        let stored = r.read_vips("default").await.expect("stored map");
        assert_eq!(stored.len(), 2, "{stored:?}");
    }
}
