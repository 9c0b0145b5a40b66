//! An immutable snapshot of everything that shapes dataplane configs: the
//! stored resources and which dataplanes are draining. Every change
//! publishes a new snapshot on a watch channel; readers never lock anything.
//!
//! The maps are persistent (imbl): a write copies the O(log n) path to
//! what it changes, not the whole catalog, and two snapshots share every
//! subtree that neither changed, so comparing them (`diff`) costs what
//! changed, not what exists.

use std::collections::BTreeSet;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use koguma_api::{DataplaneSpec, MeshSpec, ResourceType};

use crate::store::StoredResource;
use crate::vips::VipMap;

pub type ResourceKey = (ResourceType, String, String);
pub type DataplaneKey = (String, String);

#[derive(Default, Clone)]
pub struct Catalog {
    pub resources: OrdMap<ResourceKey, Arc<StoredResource>>,
    /// Dataplanes that get no new traffic but keep their config: those
    /// shutting down, and those whose agent has not yet applied a first
    /// config (nothing listens there yet).
    pub draining: OrdSet<DataplaneKey>,
    /// Each mesh's service VIPs.
    pub vips: OrdMap<String, Arc<VipMap>>,
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

    /// The `kuma.io/service` names on the inbounds of `mesh`'s dataplanes.
    pub fn services<'a>(&'a self, mesh: &'a str) -> BTreeSet<&'a str> {
        self.dataplanes(mesh)
            .filter_map(|(_, d)| d.networking())
            .flat_map(|n| n.inbound.iter().map(|i| i.service()))
            .filter(|s| !s.is_empty())
            .collect()
    }

    pub fn is_draining(&self, mesh: &str, name: &str) -> bool {
        self.draining
            .contains(&(mesh.to_string(), name.to_string()))
    }

    /// Test helper and loader: puts a stored resource in under its key.
    pub fn insert(&mut self, stored: Arc<StoredResource>) {
        let r = &stored.resource;
        let key = (r.resource_type(), r.meta.mesh.clone(), r.meta.name.clone());
        self.resources.insert(key, stored);
    }
}
