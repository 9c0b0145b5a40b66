//! An immutable snapshot of everything that shapes dataplane configs: the
//! stored resources and which dataplanes are draining. Every change
//! publishes a new snapshot on a watch channel; readers never lock anything.
//!
//! The maps are persistent (imbl): a write copies the O(log n) path to
//! what it changes, not the whole catalog, and two snapshots share every
//! subtree that neither changed, so comparing them (`diff`) costs what
//! changed, not what exists.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use koguma_api::{DataplaneSpec, MeshSpec, Resource, ResourceType};

use crate::store::StoredResource;
use crate::vips::VipMap;

pub type ResourceKey = (ResourceType, String, String);
pub type DataplaneKey = (String, String);

#[derive(Default, Clone)]
pub struct Catalog {
    pub resources: OrdMap<ResourceKey, Arc<StoredResource>>,
    /// Dataplanes that get no new traffic but keep their config: those
    /// shutting down, and those whose agent has not yet applied a first
    /// config (nothing listens there yet). Zone ingresses shutting down are
    /// here too, under mesh "".
    pub draining: OrdSet<DataplaneKey>,
    /// Each mesh's service VIPs.
    pub vips: OrdMap<String, Arc<VipMap>>,
    /// Bumped for a mesh when another instance changed its secrets:
    /// whoever caches what they hold (the mesh CA) reads them again.
    pub secret_epochs: OrdMap<String, u64>,
    /// This control plane's zone, when it is a zone of a multi-zone
    /// deployment: its sidecars' locality.
    pub zone: Option<Arc<str>>,
}

impl Catalog {
    pub fn get(&self, rtype: ResourceType, mesh: &str, name: &str) -> Option<&Arc<StoredResource>> {
        self.resources
            .get(&(rtype, mesh.to_string(), name.to_string()))
    }

    /// The resources of one type, of one mesh or of all: a range of the
    /// ordered map, not a walk of the whole catalog.
    pub fn list<'a>(
        &'a self,
        rtype: ResourceType,
        mesh: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<StoredResource>> + 'a {
        let start = (rtype, mesh.unwrap_or_default().to_string(), String::new());
        self.resources
            .range(start..)
            .take_while(move |((t, m, _), _)| *t == rtype && mesh.is_none_or(|want| want == m))
            .map(|(_, r)| r)
    }

    /// The bytes of the Secret `name` of `mesh`, for a data source.
    pub fn secret_bytes(&self, mesh: &str, name: &str) -> Result<Vec<u8>, String> {
        self.get(ResourceType::Secret, mesh, name)
            .and_then(|r| r.resource.as_secret())
            .ok_or_else(|| format!("secret {name:?} does not exist in mesh {mesh:?}"))?
            .bytes()
    }

    pub fn mesh(&self, name: &str) -> Option<&MeshSpec> {
        self.get(ResourceType::Mesh, "", name)
            .and_then(|r| r.resource.as_mesh())
    }

    /// The dataplanes of `mesh` with their specs.
    pub fn dataplanes<'a>(
        &'a self,
        mesh: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a DataplaneSpec)> + 'a {
        self.list(ResourceType::Dataplane, Some(mesh))
            .filter_map(|r| {
                r.resource
                    .as_dataplane()
                    .map(|d| (r.resource.meta.name.as_str(), d))
            })
    }

    /// The `kuma.io/service` names of `mesh`: on the inbounds of its
    /// dataplanes, and offered by zone ingresses (services of other zones).
    pub fn services<'a>(&'a self, mesh: &'a str) -> BTreeSet<&'a str> {
        let ingresses = self
            .list(ResourceType::ZoneIngress, None)
            .filter_map(|r| r.resource.as_zone_ingress())
            .flat_map(|zi| &zi.available_services)
            .filter(|a| a.mesh == mesh)
            .filter_map(|a| a.tags.get(koguma_api::tags::SERVICE).map(String::as_str));
        let external = self
            .list(ResourceType::ExternalService, Some(mesh))
            .filter_map(|r| r.resource.as_external_service())
            .map(|e| e.service());
        self.dataplanes(mesh)
            .filter_map(|(_, d)| d.networking())
            .flat_map(|n| n.inbound.iter().map(|i| i.service()))
            .chain(ingresses)
            .chain(external)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The services `resource` names, by mesh: those that need a VIP once
    /// it is stored.
    pub fn services_named_by<'a>(
        &self,
        resource: &'a Resource,
    ) -> BTreeMap<String, BTreeSet<&'a str>> {
        let mut out: BTreeMap<String, BTreeSet<&'a str>> = BTreeMap::new();
        if let Some(net) = resource.as_dataplane().and_then(|d| d.networking()) {
            out.entry(resource.meta.mesh.clone()).or_default().extend(
                net.inbound
                    .iter()
                    .map(|i| i.service())
                    .filter(|s| !s.is_empty()),
            );
        }
        if let Some(es) = resource.as_external_service() {
            out.entry(resource.meta.mesh.clone())
                .or_default()
                .insert(es.service());
        }
        if let Some(zi) = resource.as_zone_ingress() {
            for a in &zi.available_services {
                if let Some(service) = a.tags.get(koguma_api::tags::SERVICE) {
                    out.entry(a.mesh.clone()).or_default().insert(service);
                }
            }
        }
        out
    }

    pub fn is_draining(&self, mesh: &str, name: &str) -> bool {
        self.draining
            .contains(&(mesh.to_string(), name.to_string()))
    }

    /// Puts `key` in or out of the draining set; returns whether that
    /// changed anything.
    pub fn set_draining(&mut self, key: &DataplaneKey, draining: bool) -> bool {
        if draining {
            self.draining.insert(key.clone()).is_none()
        } else {
            self.draining.remove(key).is_some()
        }
    }

    pub fn secret_epoch(&self, mesh: &str) -> u64 {
        self.secret_epochs.get(mesh).copied().unwrap_or_default()
    }

    /// Forgets a deleted mesh and everything in it.
    pub fn remove_mesh(&mut self, name: &str) {
        let gone: Vec<_> = self
            .resources
            .keys()
            .filter(|(_, m, _)| m == name)
            .cloned()
            .collect();
        for key in gone {
            self.resources.remove(&key);
        }
        self.draining = self
            .draining
            .iter()
            .filter(|(m, _)| m != name)
            .cloned()
            .collect();
        self.vips.remove(name);
    }

    /// Test helper: puts a stored resource in under its key.
    #[cfg(test)]
    pub fn insert(&mut self, stored: Arc<StoredResource>) {
        let r = &stored.resource;
        let key = (r.resource_type(), r.meta.mesh.clone(), r.meta.name.clone());
        self.resources.insert(key, stored);
    }
}
