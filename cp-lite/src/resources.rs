//! The one way resources change: validated, checked against what exists,
//! written to the store, then published as a new catalog snapshot.

use std::sync::{Arc, Mutex};

use koguma_api::{Resource, ResourceType, Spec, ValidationError};
use tokio::sync::watch;

use crate::catalog::{Catalog, DataplaneKey};
use crate::role::{ENV_LABEL, ORIGIN_LABEL, PROXY_TYPE_LABEL, Role, ZONE_LABEL};
use crate::store::{Origin, ResourceStore, StoreError, StoredResource};
use crate::vips::{self, VipMap};

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("{0}")]
    Invalid(ValidationError),
    #[error("{kind} {name:?} not found{}", mesh_suffix(.mesh))]
    NotFound {
        kind: &'static str,
        mesh: String,
        name: String,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the stored VIPs of mesh {mesh:?} cannot be read: {reason}")]
    Vips { mesh: String, reason: String },
}

fn mesh_suffix(mesh: &str) -> String {
    if mesh.is_empty() {
        String::new()
    } else {
        format!(" in mesh {mesh:?}")
    }
}

impl From<ValidationError> for ResourceError {
    fn from(e: ValidationError) -> Self {
        ResourceError::Invalid(e)
    }
}

pub struct Resources {
    store: Box<dyn ResourceStore>,
    // Serializes writers so that the store and the published catalog agree.
    // Held only around synchronous store calls, never across an await.
    write: Mutex<()>,
    catalog: watch::Sender<Arc<Catalog>>,
    role: Role,
}

impl Resources {
    /// Loads the store and makes sure a `default` mesh exists, as Kuma does
    /// (a federated zone's meshes come from its global).
    pub fn open(store: Box<dyn ResourceStore>, role: Role) -> Result<Resources, ResourceError> {
        let mut catalog = Catalog {
            zone: role.zone_name().map(Arc::from),
            ..Catalog::default()
        };
        for stored in store.list()? {
            catalog.insert(Arc::new(stored));
        }
        let meshes: Vec<String> = catalog
            .list(ResourceType::Mesh, None)
            .map(|m| m.resource.meta.name.clone())
            .collect();
        for mesh in meshes {
            let stored = match store.secret(&mesh, &vips::record_name(&mesh))? {
                Some(json) => vips::parse(&json).map_err(|reason| ResourceError::Vips {
                    mesh: mesh.clone(),
                    reason,
                })?,
                None => VipMap::new(),
            };
            catalog.vips.insert(mesh, Arc::new(stored));
        }
        let (tx, _) = watch::channel(Arc::new(catalog));
        let resources = Resources {
            store,
            write: Mutex::new(()),
            catalog: tx,
            role,
        };
        // Services that arrived in a store written by an older version.
        let catalog = resources.catalog();
        for mesh in catalog.vips.keys() {
            let services = catalog.services(mesh).into_iter();
            if let Some(map) = resources.allocate_vips(&catalog, mesh, services)? {
                resources.publish(|c| {
                    c.vips.insert(mesh.clone(), map);
                });
            }
        }
        if resources.role.zone_name().is_none() && resources.catalog().mesh("default").is_none() {
            let default =
                Resource::from_value(serde_json::json!({"type": "Mesh", "name": "default"}))?;
            resources.upsert(default, Origin::Api)?;
            tracing::info!("created the default mesh");
        }
        Ok(resources)
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// Whether the dataplane is in the store now (published snapshots may
    /// be a batching window behind).
    pub fn is_stored(&self, key: &DataplaneKey) -> bool {
        self.catalog
            .borrow()
            .get(ResourceType::Dataplane, &key.0, &key.1)
            .is_some()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Catalog>> {
        self.catalog.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The labels Kuma computes for every resource (`labels.Compute`): the
    /// mesh of a mesh-scoped one, and the kind of proxy a proxy is. A user's
    /// own value is kept (and validated).
    fn stamp_labels(resource: &mut Resource) {
        let rtype = resource.resource_type();
        let labels = &mut resource.meta.labels;
        if rtype.is_mesh_scoped() {
            labels
                .entry(koguma_api::MESH_LABEL.into())
                .or_insert_with(|| resource.meta.mesh.clone());
        }
        let proxy_type = match rtype {
            ResourceType::Dataplane => Some("sidecar"),
            ResourceType::ZoneIngress => Some("zoneingress"),
            ResourceType::ZoneEgress => Some("zoneegress"),
            _ => None,
        };
        if let Some(t) = proxy_type {
            labels.insert(PROXY_TYPE_LABEL.into(), t.into());
        }
    }

    /// What a control plane that serves dataplanes makes is marked as its
    /// zone's, as Kuma's zone CP does: origin (and, federated, zone) labels,
    /// the environment, and for a federated zone the `kuma.io/zone` tag on
    /// every inbound (what other zones and the global select and route by).
    fn stamp_zone(&self, resource: &mut Resource) {
        if self.role == Role::Global || !resource.resource_type().kds_sync().zone_sends() {
            return;
        }
        let labels = &mut resource.meta.labels;
        labels.insert(ORIGIN_LABEL.into(), "zone".into());
        labels
            .entry(ENV_LABEL.into())
            .or_insert_with(|| "universal".into());
        let Some(zone) = self.role.zone_name() else {
            return;
        };
        labels.insert(ZONE_LABEL.into(), zone.into());
        match &mut resource.spec {
            Spec::Dataplane(d) => {
                for inbound in d.networking.iter_mut().flat_map(|n| &mut n.inbound) {
                    inbound
                        .tags
                        .insert(koguma_api::tags::ZONE.into(), zone.into());
                }
            }
            Spec::ZoneIngress(z) => z.zone = zone.into(),
            Spec::ZoneEgress(z) => z.zone = zone.into(),
            _ => {}
        }
    }

    fn publish(&self, change: impl FnOnce(&mut Catalog)) {
        self.catalog.send_modify(|arc| change(Arc::make_mut(arc)));
    }

    /// Creates or replaces `resource`; returns the stored form and whether
    /// it was created. A bad resource changes nothing. An API update of an
    /// agent-registered dataplane leaves it the agent's: it still goes when
    /// the agent does.
    pub fn upsert(
        &self,
        mut resource: Resource,
        origin: Origin,
    ) -> Result<(Resource, bool), ResourceError> {
        if origin != Origin::Kds {
            self.stamp_zone(&mut resource);
        }
        Self::stamp_labels(&mut resource);
        resource.validate()?;
        let _guard = self.lock();
        let catalog = self.catalog();
        if resource.resource_type().is_mesh_scoped() && catalog.mesh(&resource.meta.mesh).is_none()
        {
            return Err(ValidationError::single(
                "mesh",
                format!("mesh {:?} does not exist", resource.meta.mesh),
            )
            .into());
        }
        // Kuma's membership check: the mesh's constraints.dataplaneProxy
        // (made where the dataplane registers, not again on a sync copy).
        if let (Some(dp), Some(mesh), true) = (
            resource.as_dataplane(),
            catalog.mesh(&resource.meta.mesh),
            origin != Origin::Kds,
        ) {
            let tags: Vec<_> = dp
                .networking()
                .iter()
                .flat_map(|n| &n.inbound)
                .map(|i| &i.tags)
                .collect();
            if let Err(why) = mesh.admits(&tags) {
                return Err(ValidationError::single(
                    "mesh",
                    format!(
                        "dataplane cannot be a member of mesh {:?}: {why}",
                        resource.meta.mesh
                    ),
                )
                .into());
            }
        }
        let key = (
            resource.resource_type(),
            resource.meta.mesh.clone(),
            resource.meta.name.clone(),
        );
        let origin = match catalog.resources.get(&key) {
            Some(existing) if origin == Origin::Api => existing.origin,
            _ => origin,
        };
        // VIPs are stored first: should the resource then fail to store, a
        // service merely holds a VIP early.
        let mut new_vips = Vec::new();
        for (mesh, services) in catalog.services_named_by(&resource) {
            if catalog.mesh(&mesh).is_some()
                && let Some(map) = self.allocate_vips(&catalog, &mesh, services.into_iter())?
            {
                new_vips.push((mesh, map));
            }
        }
        let created = self.store.upsert(&mut resource, origin)?;
        let key = (
            resource.resource_type(),
            resource.meta.mesh.clone(),
            resource.meta.name.clone(),
        );
        let stored = Arc::new(StoredResource {
            resource: resource.clone(),
            origin,
        });
        self.publish(|c| {
            c.resources.insert(key, stored);
            for (mesh, map) in new_vips {
                c.vips.insert(mesh, map);
            }
        });
        Ok((resource, created))
    }

    pub fn delete(&self, rtype: ResourceType, mesh: &str, name: &str) -> Result<(), ResourceError> {
        let _guard = self.lock();
        let catalog = self.catalog();
        if rtype == ResourceType::Mesh && catalog.dataplanes(name).next().is_some() {
            return Err(ValidationError::single(
                "mesh",
                format!(
                    "unable to delete mesh {name:?}: there are still dataplanes attached to it"
                ),
            )
            .into());
        }
        if rtype == ResourceType::Mesh {
            // Kuma deletes a mesh's policies and secrets with it.
            self.store.delete_mesh_contents(name)?;
        }
        if !self.store.delete(rtype, mesh, name)? {
            return Err(ResourceError::NotFound {
                kind: rtype.kind(),
                mesh: mesh.to_string(),
                name: name.to_string(),
            });
        }
        let key = (rtype, mesh.to_string(), name.to_string());
        self.publish(|c| {
            c.resources.remove(&key);
            if rtype == ResourceType::Mesh {
                let gone: Vec<_> = c
                    .resources
                    .keys()
                    .filter(|(_, m, _)| m == name)
                    .cloned()
                    .collect();
                for key in gone {
                    c.resources.remove(&key);
                }
                c.draining = c
                    .draining
                    .iter()
                    .filter(|(m, _)| m != name)
                    .cloned()
                    .collect();
                c.vips.remove(name);
            }
            if matches!(rtype, ResourceType::Dataplane | ResourceType::ZoneIngress) {
                c.draining.remove(&(mesh.to_string(), name.to_string()));
            }
        });
        Ok(())
    }

    /// Deletes an agent-registered dataplane only if it is still the one
    /// that was registered then (a person may have taken it over since).
    /// `rtype` is Dataplane, or a zone proxy (mesh "").
    pub fn deregister(
        &self,
        rtype: ResourceType,
        key: &DataplaneKey,
    ) -> Result<bool, ResourceError> {
        let owned_by_agent = self
            .catalog()
            .get(rtype, &key.0, &key.1)
            .is_some_and(|r| r.origin == Origin::Agent);
        if !owned_by_agent {
            return Ok(false);
        }
        self.delete(rtype, &key.0, &key.1)?;
        Ok(true)
    }

    /// Gives the services that have none a VIP and stores the mesh's new
    /// map; `None` when nothing changed. Running out of addresses is
    /// logged, not fatal (as in Kuma): such a service has no name.
    fn allocate_vips<'a>(
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
            .put_secret(mesh, &vips::record_name(mesh), &vips::render(&map))?;
        tracing::info!(mesh, vips = map.len(), "service VIPs allocated");
        Ok(Some(Arc::new(map)))
    }

    pub fn secret(&self, mesh: &str, name: &str) -> Result<Option<String>, ResourceError> {
        Ok(self.store.secret(mesh, name)?)
    }

    pub fn replace_secret(&self, mesh: &str, name: &str, data: &str) -> Result<(), ResourceError> {
        Ok(self.store.put_secret(mesh, name, data)?)
    }

    /// The stored secret, or `make()`'s, stored now. `make` may run even
    /// when another writer wins the race; the winner's secret is returned.
    pub fn secret_or_insert<E: From<ResourceError>>(
        &self,
        mesh: &str,
        name: &str,
        make: impl FnOnce() -> Result<String, E>,
    ) -> Result<String, E> {
        if let Some(s) = self.secret(mesh, name)? {
            return Ok(s);
        }
        let data = make()?;
        Ok(self
            .store
            .insert_secret(mesh, name, &data)
            .map_err(ResourceError::from)?)
    }

    pub fn set_draining(&self, key: &DataplaneKey, draining: bool) {
        if self.catalog().draining.contains(key) == draining {
            return;
        }
        let _guard = self.lock();
        self.publish(|c| {
            if draining {
                c.draining.insert(key.clone());
            } else {
                c.draining.remove(key);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use std::net::Ipv4Addr;

    fn dataplane(name: &str, service: &str) -> Resource {
        Resource::from_value(serde_json::json!({
            "type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": "10.0.0.1", "inbound": [
                {"port": 8080, "servicePort": 18080, "tags": {"kuma.io/service": service}}
            ]}
        }))
        .unwrap()
    }

    fn vip(r: &Resources, service: &str) -> Option<Ipv4Addr> {
        r.catalog().vips.get("default")?.get(service).copied()
    }

    #[test]
    fn vips_are_lowest_free_first_and_survive_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let r = Resources::open(
                Box::new(SqliteStore::open(dir.path()).unwrap()),
                Role::Standalone,
            )
            .unwrap();
            r.upsert(dataplane("b1", "backend"), Origin::Api).unwrap();
            r.upsert(dataplane("w1", "web"), Origin::Api).unwrap();
            r.upsert(dataplane("b2", "backend"), Origin::Api).unwrap();
            assert_eq!(vip(&r, "backend"), Some(Ipv4Addr::new(240, 0, 0, 0)));
            assert_eq!(vip(&r, "web"), Some(Ipv4Addr::new(240, 0, 0, 1)));
            // A service whose dataplanes go keeps its VIP.
            r.delete(ResourceType::Dataplane, "default", "w1").unwrap();
            assert_eq!(vip(&r, "web"), Some(Ipv4Addr::new(240, 0, 0, 1)));
        }
        let r = Resources::open(
            Box::new(SqliteStore::open(dir.path()).unwrap()),
            Role::Standalone,
        )
        .unwrap();
        assert_eq!(vip(&r, "backend"), Some(Ipv4Addr::new(240, 0, 0, 0)));
        assert_eq!(vip(&r, "web"), Some(Ipv4Addr::new(240, 0, 0, 1)));
        r.upsert(dataplane("d1", "db"), Origin::Api).unwrap();
        assert_eq!(vip(&r, "db"), Some(Ipv4Addr::new(240, 0, 0, 2)));
    }
}
