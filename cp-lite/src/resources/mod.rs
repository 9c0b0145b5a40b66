//! The one way resources change: validated, checked against what exists,
//! written to the store, then published as a new catalog snapshot.

use std::sync::Arc;

use koguma_api::{Resource, ResourceType, ValidationError};
use tokio::sync::{Mutex, MutexGuard, watch};

use crate::catalog::{Catalog, DataplaneKey};
use crate::role::Role;
use crate::store::{Expect, Origin, ResourceStore, Session, StoreError, StoredResource};

mod follow;
mod labels;
mod sessions;
mod vip_allocation;

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
    // Serializes this instance's writers, and the catalog updates from
    // other instances' changes, so that the published catalog follows the
    // store. Only writes wait for it: readers take snapshots.
    write: Mutex<()>,
    /// The sessions this instance last stored, by dataplane.
    own_sessions: std::sync::Mutex<std::collections::HashMap<DataplaneKey, Session>>,
    catalog: watch::Sender<Arc<Catalog>>,
    role: Role,
    /// This control-plane instance, as sessions and insights name it.
    instance: String,
    /// Whether this instance does the work done once (`None`: it is the
    /// store's only writer, so it always does).
    leader: Option<watch::Receiver<bool>>,
}

impl Resources {
    /// Loads the store and makes sure a `default` mesh exists, as Kuma does
    /// (a federated zone's meshes come from its global).
    pub async fn open(
        store: Box<dyn ResourceStore>,
        role: Role,
        instance: &str,
    ) -> Result<Resources, ResourceError> {
        let catalog = Catalog {
            zone: role.zone_name().map(Arc::from),
            ..Catalog::default()
        };
        let (tx, _) = watch::channel(Arc::new(catalog));
        let leader = store.leadership();
        let resources = Resources {
            store,
            write: Mutex::new(()),
            own_sessions: Default::default(),
            catalog: tx,
            role,
            instance: instance.to_string(),
            leader,
        };
        {
            let _guard = resources.lock().await;
            resources.read_everything().await?;
        }
        // Services of a store written by an older version. The only writer
        // does it before serving; on a shared store, whoever wins the
        // leadership does (`instances::run`).
        if resources.leadership().is_none() {
            resources.allocate_all_vips().await?;
        }
        if resources.role.zone_name().is_none() && resources.catalog().mesh("default").is_none() {
            let default =
                Resource::from_value(serde_json::json!({"type": "Mesh", "name": "default"}))?;
            match resources.upsert(default, Origin::Api).await {
                Ok(_) => tracing::info!("created the default mesh"),
                // Another instance starting beside this one made it.
                Err(ResourceError::Store(StoreError::Conflict { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(resources)
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn is_leader(&self) -> bool {
        self.leader.as_ref().is_none_or(|l| *l.borrow())
    }

    /// Leadership as it changes; `None` when this instance always leads.
    pub fn leadership(&self) -> Option<watch::Receiver<bool>> {
        self.leader.clone()
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

    async fn lock(&self) -> MutexGuard<'_, ()> {
        self.write.lock().await
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    fn publish(&self, change: impl FnOnce(&mut Catalog)) {
        self.catalog.send_modify(|arc| change(Arc::make_mut(arc)));
    }

    /// Publishes only when `change` says it changed something: a resync
    /// that finds nothing new wakes nobody.
    fn publish_if(&self, change: impl FnOnce(&mut Catalog) -> bool) {
        self.catalog
            .send_if_modified(|arc| change(Arc::make_mut(arc)));
    }

    /// Creates or replaces `resource` with whatever is stored now (a
    /// concurrent write between this one's read and write still loses with
    /// a conflict); see `upsert_if`.
    pub async fn upsert(
        &self,
        resource: Resource,
        origin: Origin,
    ) -> Result<(Resource, bool), ResourceError> {
        self.upsert_if(resource, origin, None).await
    }

    /// Creates or replaces `resource`; returns the stored form and whether
    /// it was created. With `if_version`, only the stored resource of that
    /// version is replaced. A bad resource changes nothing. An API update
    /// of an agent-registered dataplane leaves it the agent's: it still
    /// goes when the agent does.
    pub async fn upsert_if(
        &self,
        mut resource: Resource,
        origin: Origin,
        if_version: Option<i64>,
    ) -> Result<(Resource, bool), ResourceError> {
        if origin != Origin::Kds {
            self.stamp_zone(&mut resource);
        }
        Self::stamp_labels(&mut resource);
        resource.validate()?;
        let _guard = self.lock().await;
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
        let rtype = resource.resource_type();
        let (expect, origin) = if origin == Origin::Kds {
            (Expect::Any, origin)
        } else {
            let current = self.current(&catalog, &resource).await?;
            let expect = match if_version {
                Some(v) => Expect::Version(v),
                None => Expect::seen(current.as_ref().map(|c| c.version)),
            };
            let origin = match &current {
                Some(existing) if origin == Origin::Api => existing.origin,
                _ => origin,
            };
            (expect, origin)
        };
        // VIPs are stored first: should the resource then fail to store, a
        // service merely holds a VIP early.
        let new_vips = if self.is_leader() {
            let named = catalog.services_named_by(&resource);
            self.allocate_vips(&catalog, named).await?
        } else {
            Vec::new()
        };
        let written = self.store.upsert(&mut resource, origin, expect).await?;
        let key = (
            rtype,
            resource.meta.mesh.clone(),
            resource.meta.name.clone(),
        );
        let stored = Arc::new(StoredResource {
            resource: resource.clone(),
            origin,
            version: written.version,
        });
        self.publish(|c| {
            // The change feed may have brought a newer one already.
            if c.resources
                .get(&key)
                .is_none_or(|r| r.version < written.version)
            {
                c.resources.insert(key, stored);
            }
            for (mesh, map) in new_vips {
                c.vips.insert(mesh, map);
            }
        });
        Ok((resource, written.created))
    }

    /// What is stored under `resource`'s key. On a shared store, read from
    /// it: another instance may have written since this one's catalog was
    /// published. This instance being the only writer, its catalog is exact
    /// (the write lock is held), and the read is saved.
    async fn current(
        &self,
        catalog: &Catalog,
        resource: &Resource,
    ) -> Result<Option<Arc<StoredResource>>, ResourceError> {
        let (rtype, mesh, name) = (
            resource.resource_type(),
            &resource.meta.mesh,
            &resource.meta.name,
        );
        if self.leader.is_none() {
            return Ok(catalog.get(rtype, mesh, name).cloned());
        }
        Ok(self.store.get(rtype, mesh, name).await?.map(Arc::new))
    }

    pub async fn delete(
        &self,
        rtype: ResourceType,
        mesh: &str,
        name: &str,
    ) -> Result<(), ResourceError> {
        let _guard = self.lock().await;
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
            self.store.delete_mesh_contents(name).await?;
        }
        if !self.store.delete(rtype, mesh, name).await? {
            return Err(ResourceError::NotFound {
                kind: rtype.kind(),
                mesh: mesh.to_string(),
                name: name.to_string(),
            });
        }
        let is_proxy = matches!(
            rtype,
            ResourceType::Dataplane | ResourceType::ZoneIngress | ResourceType::ZoneEgress
        );
        let proxy_key = (mesh.to_string(), name.to_string());
        if is_proxy {
            self.store.delete_session(&proxy_key).await?;
            self.own_sessions().remove(&proxy_key);
        }
        let key = (rtype, mesh.to_string(), name.to_string());
        self.publish(|c| {
            c.resources.remove(&key);
            if rtype == ResourceType::Mesh {
                c.remove_mesh(name);
            }
            if is_proxy {
                c.draining.remove(&proxy_key);
            }
        });
        Ok(())
    }

    /// Deletes an agent-registered dataplane only if it is still the one
    /// that was registered then (a person may have taken it over since),
    /// and its stream was last served by instance `server` (its agent may
    /// have reconnected to another since). `rtype` is Dataplane, or a zone
    /// proxy (mesh "").
    pub async fn deregister(
        &self,
        rtype: ResourceType,
        key: &DataplaneKey,
        server: &str,
    ) -> Result<bool, ResourceError> {
        let owned_by_agent = self
            .catalog()
            .get(rtype, &key.0, &key.1)
            .is_some_and(|r| r.origin == Origin::Agent);
        if !owned_by_agent || !self.served_by(key, server).await? {
            return Ok(false);
        }
        match self.delete(rtype, &key.0, &key.1).await {
            Ok(()) => Ok(true),
            // Another instance got there first.
            Err(ResourceError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn secret(&self, mesh: &str, name: &str) -> Result<Option<String>, ResourceError> {
        Ok(self.store.secret(mesh, name).await?)
    }

    pub async fn replace_secret(
        &self,
        mesh: &str,
        name: &str,
        data: &str,
    ) -> Result<(), ResourceError> {
        Ok(self.store.put_secret(mesh, name, data).await?)
    }

    /// The stored secrets, or those `make()` makes, stored now together.
    /// `make` may run even when another writer (this instance's or
    /// another's) wins the race; the winner's secrets are returned.
    pub async fn secrets_or_insert<E: From<ResourceError>>(
        &self,
        mesh: &str,
        names: &[&str],
        make: impl FnOnce() -> Result<Vec<String>, E>,
    ) -> Result<Vec<String>, E> {
        let mut stored = Vec::new();
        for name in names {
            match self.secret(mesh, name).await? {
                Some(s) => stored.push(s),
                None => break,
            }
        }
        if stored.len() == names.len() {
            return Ok(stored);
        }
        let made = make()?;
        let secrets: Vec<(String, String)> =
            names.iter().map(|n| n.to_string()).zip(made).collect();
        Ok(self.insert_secrets(mesh, &secrets).await?)
    }

    /// Stores those of `secrets` that do not exist yet, together, and
    /// returns what is stored under each name: a racing writer's, if it
    /// committed first.
    pub async fn insert_secrets(
        &self,
        mesh: &str,
        secrets: &[(String, String)],
    ) -> Result<Vec<String>, ResourceError> {
        Ok(self.store.insert_secrets(mesh, secrets).await?)
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

    #[tokio::test]
    async fn vips_are_lowest_free_first_and_survive_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let r = Resources::open(
                Box::new(SqliteStore::open(dir.path()).unwrap()),
                Role::Standalone,
                "test",
            )
            .await
            .unwrap();
            r.upsert(dataplane("b1", "backend"), Origin::Api)
                .await
                .unwrap();
            r.upsert(dataplane("w1", "web"), Origin::Api).await.unwrap();
            r.upsert(dataplane("b2", "backend"), Origin::Api)
                .await
                .unwrap();
            assert_eq!(vip(&r, "backend"), Some(Ipv4Addr::new(240, 0, 0, 0)));
            assert_eq!(vip(&r, "web"), Some(Ipv4Addr::new(240, 0, 0, 1)));
            // A service whose dataplanes go keeps its VIP.
            r.delete(ResourceType::Dataplane, "default", "w1")
                .await
                .unwrap();
            assert_eq!(vip(&r, "web"), Some(Ipv4Addr::new(240, 0, 0, 1)));
        }
        let r = Resources::open(
            Box::new(SqliteStore::open(dir.path()).unwrap()),
            Role::Standalone,
            "test",
        )
        .await
        .unwrap();
        assert_eq!(vip(&r, "backend"), Some(Ipv4Addr::new(240, 0, 0, 0)));
        assert_eq!(vip(&r, "web"), Some(Ipv4Addr::new(240, 0, 0, 1)));
        r.upsert(dataplane("d1", "db"), Origin::Api).await.unwrap();
        assert_eq!(vip(&r, "db"), Some(Ipv4Addr::new(240, 0, 0, 2)));
    }
}
