//! The catalog indexed the way configs read it: per mesh, each service's
//! cluster (its ready endpoints), protocol, ports and who may call it.
//!
//! The index is updated from the difference between two catalog snapshots,
//! so its cost follows what changed: a new instance of service S recomputes
//! S alone; an unrelated resource recomputes nothing. A service entry that
//! comes out the same keeps its old `Arc`, so a config stream finds out
//! whether anything it uses changed by comparing pointers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet, ordmap, ordset};
use koguma_api::{DataplaneSpec, ExternalServiceSpec, Protocol, ResourceType, Selector};
use koguma_proto::v1 as pb;

use super::Shared;
use super::beyond;
use super::cluster_policy::MeshPolicies;
use super::interest::{ChangeSet, MeshChanges};
use super::permissions::{self, PermissionKey};
use super::remote::{self, RemoteService};
use crate::catalog::Catalog;
use crate::store::StoredResource;
use crate::vips::VipMap;

/// The service a zone egress is in every mesh: its certificates carry
/// `spiffe://<mesh>/zone-egress` (Kuma's `ZoneEgressServiceName`).
pub const ZONE_EGRESS_SERVICE: &str = "zone-egress";

/// What the mesh's dataplanes say of one service.
#[derive(Debug, PartialEq)]
pub struct ServiceEntry {
    /// What every caller gets: the ready endpoints of every inbound that
    /// carries the service, on dataplanes that are not draining.
    pub cluster: pb::Cluster,
    /// `koguma_proto::cluster_hash(&cluster)`, computed once for every
    /// dataplane's config version.
    pub cluster_hash: u64,
    /// How many of the cluster's endpoints (the first ones) are in this
    /// zone; the rest lead to other zones.
    pub local: usize,
    /// The one protocol all its inbounds agree on, else tcp (Kuma's rule).
    /// Taken from every inbound, ready or not, so that a service whose last
    /// endpoint goes away still answers HTTP callers with a 503.
    pub protocol: Protocol,
    /// The ports its inbounds listen on: its VIP answers on these and 80.
    pub ports: BTreeSet<u32>,
    /// With mesh mTLS on, the permissions of each distinct tag set among
    /// its inbounds (and, when policies select dataplanes, of each inbound):
    /// what those inbounds enforce, and a caller may reach the service if
    /// one of them lets it in.
    pub permissions: BTreeMap<PermissionKey, pb::Permissions>,
}

impl ServiceEntry {
    /// What the inbound on `port` of dataplane `name`, with `tags`,
    /// enforces.
    pub fn permissions_of(
        &self,
        name: &str,
        port: u32,
        tags: &BTreeMap<String, String>,
    ) -> Option<&pb::Permissions> {
        let key = |inbound| PermissionKey {
            tags: tags.clone(),
            inbound,
        };
        self.permissions
            .get(&key(Some((name.to_string(), port))))
            .or_else(|| self.permissions.get(&key(None)))
    }
}

/// One mesh as configs see it.
#[derive(Clone, Default)]
pub struct MeshContext {
    pub mesh: Option<Arc<StoredResource>>,
    /// Every permission change shows here, in the entries of the services
    /// whose inbounds it changes.
    pub services: OrdMap<String, Shared<ServiceEntry>>,
    pub vips: Option<Arc<VipMap>>,
    /// service → the dataplanes that have an inbound of it.
    members: OrdMap<String, OrdSet<String>>,
    /// service → what other zones' ingresses offer of it.
    remote: OrdMap<String, Arc<RemoteService>>,
    /// service → the ExternalService that names it.
    external: OrdMap<String, Arc<StoredResource>>,
    /// The mesh's `to` policies (MeshTimeout, MeshRetry, ...): a new
    /// pointer whenever one of them changes.
    pub policies: Shared<MeshPolicies>,
}

impl MeshContext {
    pub fn mtls_on(&self) -> bool {
        self.mesh
            .as_ref()
            .and_then(|m| m.resource.as_mesh())
            .and_then(|m| m.mtls_backend())
            .is_some()
    }

    fn mesh_spec(&self) -> Option<&koguma_api::MeshSpec> {
        self.mesh.as_ref().and_then(|m| m.resource.as_mesh())
    }

    /// Whether cross-zone traffic of this mesh leaves through the zone egress.
    pub fn zone_egress(&self) -> bool {
        self.mesh_spec().is_some_and(|m| m.zone_egress())
    }

    /// The ExternalServices of this mesh, by service name.
    pub fn external_services(&self) -> impl Iterator<Item = (&String, &ExternalServiceSpec)> {
        self.external
            .iter()
            .filter_map(|(s, r)| r.resource.as_external_service().map(|e| (s, e)))
    }

    /// The ExternalService named `service`, if one is.
    pub fn external_of(&self, service: &str) -> Option<&ExternalServiceSpec> {
        self.external
            .get(service)
            .and_then(|r| r.resource.as_external_service())
    }

    /// What other zones offer of `service`.
    pub fn remote_of(&self, service: &str) -> Option<&RemoteService> {
        self.remote.get(service).map(|r| &**r)
    }
}

/// Every mesh's context, as of one catalog snapshot.
#[derive(Clone, Default)]
pub struct ConfigIndex {
    pub meshes: OrdMap<String, Arc<MeshContext>>,
    /// This zone's egresses (`address:port`), for meshes that route
    /// through them.
    pub egresses: Arc<Vec<(String, u32)>>,
}

/// What a catalog change means for one mesh.
#[derive(Default)]
struct MeshChange {
    /// The mesh itself (its mTLS), or a permission that may select any
    /// service, changed: every service again.
    all_services: bool,
    services: BTreeSet<String>,
    /// (dataplane, services it had, services it has)
    members: Vec<(String, BTreeSet<String>, BTreeSet<String>)>,
    /// ExternalServices that changed.
    external: Vec<ExternalChange>,
    /// A `to` policy changed.
    policies: bool,
}

/// One ExternalService before and after: the service it named, and what
/// it is now (its service and resource).
type ExternalChange = (Option<String>, Option<(String, Arc<StoredResource>)>);

fn services_of(stored: Option<&Arc<StoredResource>>) -> BTreeSet<String> {
    stored
        .and_then(|r| r.resource.as_dataplane())
        .and_then(DataplaneSpec::networking)
        .map(|n| {
            n.inbound
                .iter()
                .map(|i| i.service().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

impl ConfigIndex {
    /// The index of `catalog` from nothing.
    pub fn build(catalog: &Catalog) -> ConfigIndex {
        ConfigIndex::default()
            .update(&Catalog::default(), catalog)
            .0
    }

    /// This index (which is `old`'s) brought up to `new`, and what changed
    /// for the streams.
    pub fn update(&self, old: &Catalog, new: &Catalog) -> (ConfigIndex, ChangeSet) {
        let mut changes: BTreeMap<String, MeshChange> = BTreeMap::new();
        let mut changed = ChangeSet::default();
        let (mut ingresses_changed, mut egresses_changed) = (false, false);
        for item in old.resources.diff(&new.resources) {
            let ((rtype, mesh, name), before, after) = match item {
                ordmap::DiffItem::Add(k, v) => (k, None, Some(v)),
                ordmap::DiffItem::Update { old, new } => (old.0, Some(old.1), Some(new.1)),
                ordmap::DiffItem::Remove(k, v) => (k, Some(v), None),
            };
            // Every `to` policy type alike: the mesh's policies are read
            // again and every stream of the mesh checks what they mean
            // for it.
            if before
                .or(after)
                .is_some_and(|r| r.resource.spec.as_policy().is_some())
            {
                changes.entry(mesh.clone()).or_default().policies = true;
                changed.meshes.entry(mesh.clone()).or_default().mesh = true;
            }
            match rtype {
                ResourceType::Mesh => {
                    changes.entry(name.clone()).or_default().all_services = true;
                    changed.meshes.entry(name.clone()).or_default().mesh = true;
                }
                ResourceType::MeshTrafficPermission => {
                    let c = changes.entry(mesh.clone()).or_default();
                    for policy in before.into_iter().chain(after) {
                        match selected_service(policy) {
                            Some(service) => {
                                c.services.insert(service);
                            }
                            None => c.all_services = true,
                        }
                    }
                }
                ResourceType::Dataplane => {
                    let (had, has) = (services_of(before), services_of(after));
                    let c = changes.entry(mesh.clone()).or_default();
                    c.services.extend(had.iter().chain(&has).cloned());
                    c.members.push((name.clone(), had, has));
                    let m = changed.meshes.entry(mesh.clone()).or_default();
                    m.dataplanes.insert(name.clone());
                }
                ResourceType::ExternalService => {
                    let service = |r: Option<&Arc<StoredResource>>| {
                        r.and_then(|r| r.resource.as_external_service())
                            .map(|e| e.service().to_string())
                    };
                    let (had, has) = (service(before), service(after));
                    let c = changes.entry(mesh.clone()).or_default();
                    c.services.extend(had.iter().chain(&has).cloned());
                    c.external.push((had, has.zip(after.cloned())));
                }
                // Its locality awareness orders every service's endpoints.
                ResourceType::MeshLoadBalancingStrategy => {
                    changes.entry(mesh.clone()).or_default().all_services = true;
                }
                ResourceType::ZoneIngress => ingresses_changed = true,
                ResourceType::ZoneEgress => egresses_changed = true,
                // An external service's TLS may come from one: the egress
                // config is made again (a provided CA is the CA cache's).
                ResourceType::Secret => egresses_changed = true,
                ResourceType::Zone => {}
                // The other `to` policy types: handled above.
                _ => {}
            }
        }
        for item in old.draining.diff(&new.draining) {
            let (ordset::DiffItem::Add((mesh, name)) | ordset::DiffItem::Remove((mesh, name))) =
                item;
            let dp = new.get(ResourceType::Dataplane, mesh, name);
            let services = services_of(dp);
            changes
                .entry(mesh.clone())
                .or_default()
                .services
                .extend(services);
        }
        for item in old.vips.diff(&new.vips) {
            let mesh = match item {
                ordmap::DiffItem::Add(m, _) | ordmap::DiffItem::Remove(m, _) => m,
                ordmap::DiffItem::Update { new, .. } => new.0,
            };
            changes.entry(mesh.clone()).or_default();
            changed.meshes.entry(mesh.clone()).or_default().vips = true;
        }

        // Other zones' services: recomputed whole (zone proxies are few),
        // compared per service.
        let mut remote = BTreeMap::new();
        if ingresses_changed {
            remote = remote::remote_services(new);
            let meshes: BTreeSet<&String> = self.meshes.keys().chain(remote.keys()).collect();
            for mesh in meshes {
                let old = self
                    .meshes
                    .get(mesh)
                    .map(|c| c.remote.clone())
                    .unwrap_or_default();
                let now = remote.get(mesh).cloned().unwrap_or_default();
                let dirty = remote::changed_services(&old, &now);
                if !dirty.is_empty() {
                    changes
                        .entry(mesh.clone())
                        .or_default()
                        .services
                        .extend(dirty);
                }
            }
        }
        let mut egresses = self.egresses.clone();
        if egresses_changed {
            let now = remote::local_egresses(new);
            if *egresses != now {
                egresses = Arc::new(now);
                for (mesh, ctx) in &self.meshes {
                    if ctx.mesh_spec().is_some_and(|m| m.zone_egress()) {
                        changes.entry(mesh.clone()).or_default().all_services = true;
                    }
                }
            }
        }

        let mut meshes = self.meshes.clone();
        for (mesh, change) in changes {
            let Some(stored_mesh) = new.get(ResourceType::Mesh, "", &mesh) else {
                meshes.remove(&mesh);
                changed.meshes.entry(mesh).or_default().mesh = true;
                continue;
            };
            let mut ctx = meshes
                .get(&mesh)
                .map_or_else(MeshContext::default, |c| MeshContext::clone(c));
            ctx.mesh = Some(stored_mesh.clone());
            ctx.vips = new.vips.get(&mesh).cloned();
            if change.policies {
                ctx.policies = Shared::new(MeshPolicies::of(new, &mesh));
            }
            if ingresses_changed {
                ctx.remote = remote
                    .remove(&mesh)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(s, r)| (s, Arc::new(r)))
                    .collect();
            }
            for (had, has) in &change.external {
                if let Some(s) = had {
                    ctx.external.remove(s);
                }
                if let Some((s, r)) = has {
                    ctx.external.insert(s.clone(), r.clone());
                }
            }
            for (dp, had, has) in &change.members {
                for s in had.difference(has) {
                    if let Some(set) = ctx.members.get_mut(s) {
                        set.remove(dp);
                        if set.is_empty() {
                            ctx.members.remove(s);
                        }
                    }
                }
                for s in has {
                    ctx.members.entry(s.clone()).or_default().insert(dp.clone());
                }
            }
            // Services that lost their last member are in `change.services`.
            let mut dirty = change.services;
            if change.all_services {
                dirty.extend(ctx.members.keys().cloned());
                dirty.extend(ctx.remote.keys().cloned());
                dirty.extend(ctx.external.keys().cloned());
            }
            for service in dirty {
                let known = ctx.members.contains_key(&service)
                    || ctx.remote.contains_key(&service)
                    || ctx.external.contains_key(&service);
                let entry = known.then(|| service_entry(new, &ctx, &egresses, &mesh, &service));
                let changed_here = match entry {
                    None => ctx.services.remove(&service).is_some(),
                    Some(entry) => {
                        let unchanged = ctx.services.get(&service).is_some_and(|e| **e == entry);
                        if !unchanged {
                            ctx.services.insert(service.clone(), Shared::new(entry));
                        }
                        !unchanged
                    }
                };
                if changed_here {
                    changed
                        .meshes
                        .entry(mesh.clone())
                        .or_default()
                        .services
                        .insert(service);
                }
            }
            meshes.insert(mesh, Arc::new(ctx));
        }
        // Meshes where nothing a stream watches changed.
        changed.meshes.retain(|_, c| *c != MeshChanges::default());
        (ConfigIndex { meshes, egresses }, changed)
    }
}

/// The one service a MeshTrafficPermission's `targetRef` can select, if it
/// names one (MeshService); `None` for Mesh and MeshSubset, which may select
/// any service.
fn selected_service(policy: &StoredResource) -> Option<String> {
    let spec = &policy.resource.as_traffic_permission()?.spec;
    match spec.selector()? {
        Selector::Service(name) | Selector::ServiceSubset(name, _) => Some(name),
        Selector::Mesh | Selector::Subset(_) | Selector::Dataplane { .. } => None,
    }
}

/// Computes one service's entry from the dataplanes that carry it here
/// and, with mesh mTLS on, the other zones that offer it.
fn service_entry(
    catalog: &Catalog,
    ctx: &MeshContext,
    egresses: &[(String, u32)],
    mesh: &str,
    service: &str,
) -> ServiceEntry {
    let mut endpoints = Vec::new();
    let mut protocols = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let mtls = ctx.mtls_on();
    let per_dataplane = mtls && permissions::selects_dataplanes(catalog, mesh);
    let mut permissions = BTreeMap::new();
    for name in ctx.members.get(service).into_iter().flatten() {
        let Some(stored) = catalog.get(ResourceType::Dataplane, mesh, name) else {
            continue;
        };
        let Some(net) = stored
            .resource
            .as_dataplane()
            .and_then(DataplaneSpec::networking)
        else {
            continue;
        };
        let draining = catalog.is_draining(mesh, name);
        for inbound in net.inbound.iter().filter(|i| i.service() == service) {
            protocols.insert(inbound.protocol().as_str());
            ports.insert(inbound.port);
            if mtls {
                let key = PermissionKey {
                    tags: inbound.tags.clone(),
                    inbound: per_dataplane.then(|| (name.clone(), inbound.port)),
                };
                permissions.entry(key).or_insert_with(|| {
                    let subject = koguma_api::InboundSubject {
                        tags: &inbound.tags,
                        dataplane: name,
                        labels: &stored.resource.meta.labels,
                        inbound_name: inbound.name.as_deref(),
                        port: inbound.port,
                    };
                    permissions::for_inbound(catalog, mesh, &subject)
                });
            }
            if draining || !inbound.is_ready() {
                continue;
            }
            let address = inbound
                .address
                .as_deref()
                .unwrap_or_else(|| net.reachable_address());
            if address.parse::<IpAddr>().is_err() {
                tracing::warn!(
                    dataplane = %name,
                    address,
                    "endpoint skipped: dataplane address is not an IP address"
                );
                continue;
            }
            endpoints.push(pb::Endpoint {
                address: address.to_string(),
                port: inbound.port,
                weight: 1,
                tags: inbound.tags.clone(),
                zone: inbound
                    .tags
                    .get(koguma_api::tags::ZONE)
                    .cloned()
                    .unwrap_or_default(),
                priority: 0,
            });
        }
    }
    endpoints.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
    let local = endpoints.len();
    let beyond = beyond::Beyond::of(catalog, ctx, egresses, mesh, service, local);
    endpoints
        .iter_mut()
        .for_each(|e| e.weight = beyond.local_weight);
    endpoints.extend(beyond.endpoints);
    for tags in beyond.tag_sets {
        protocols.insert(tags.get(koguma_api::tags::PROTOCOL).map_or("tcp", |p| p));
        // Other zones' inbounds, for reachability: by their tags alone.
        let key = PermissionKey {
            tags: tags.clone(),
            inbound: None,
        };
        if mtls {
            permissions
                .entry(key)
                .or_insert_with(|| permissions::for_tags(catalog, mesh, tags));
        }
    }
    let protocol = match protocols.len() {
        1 => Protocol::from_tag(protocols.first().copied()),
        _ => Protocol::Tcp,
    };
    let mut cluster = cluster(mesh, service, mtls, endpoints);
    cluster.unavailable = beyond.unavailable;
    if let Some(identity) = beyond.identity {
        cluster.identity = identity;
    }
    ServiceEntry {
        cluster_hash: koguma_proto::cluster_hash(&cluster),
        cluster,
        local,
        protocol,
        ports,
        permissions,
    }
}

/// The cluster of `service`: round robin over `endpoints`, and with mesh
/// mTLS on, the exact identity its endpoints must present.
pub fn cluster(mesh: &str, service: &str, mtls: bool, endpoints: Vec<pb::Endpoint>) -> pb::Cluster {
    pb::Cluster {
        name: service.to_string(),
        endpoints,
        identity: if mtls {
            format!("spiffe://{mesh}/{service}")
        } else {
            String::new()
        },
        sni: if mtls {
            koguma_types::sni::cross_zone_sni(
                mesh,
                &BTreeMap::from([(koguma_api::tags::SERVICE.to_string(), service.to_string())]),
            )
        } else {
            String::new()
        },
        unavailable: String::new(),
        policy: None,
        stats_name: String::new(),
    }
}
