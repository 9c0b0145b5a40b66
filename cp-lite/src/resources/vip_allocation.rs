//! Service VIPs: handed out by the leader only (two instances would give
//! one address twice), as services arrive through this instance's writes
//! or through the change feed, and kept with the mesh's secrets.

use std::sync::Arc;

use koguma_api::ResourceType;

use super::{ResourceError, Resources};
use crate::catalog::{Catalog, ResourceKey};
use crate::vips::{self, VipMap};

impl Resources {
    /// Gives the services that have none a VIP and stores the mesh's new
    /// map; `None` when nothing changed. Running out of addresses is
    /// logged, not fatal (as in Kuma): such a service has no name. Only the
    /// leader allocates: two instances would hand out one address twice.
    pub(super) async fn allocate_vips<'a>(
        &self,
        catalog: &Catalog,
        mesh: &str,
        services: impl Iterator<Item = &'a str>,
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
        for mesh in catalog.list(ResourceType::Mesh, None) {
            let mesh = &mesh.resource.meta.name;
            let services = catalog.services(mesh).into_iter();
            if let Some(map) = self.allocate_vips(&catalog, mesh, services).await? {
                self.publish(|c| {
                    c.vips.insert(mesh.clone(), map);
                });
            }
        }
        Ok(())
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
        for key in keys {
            let Some(stored) = catalog.get(key.0, &key.1, &key.2) else {
                continue;
            };
            for (mesh, services) in catalog.services_named_by(&stored.resource) {
                if catalog.mesh(&mesh).is_some()
                    && let Some(map) = self
                        .allocate_vips(&catalog, &mesh, services.into_iter())
                        .await?
                {
                    self.publish(|c| {
                        c.vips.insert(mesh, map);
                    });
                }
            }
        }
        Ok(())
    }
}
