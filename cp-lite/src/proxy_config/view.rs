//! One dataplane's config as its stream keeps it: the config, and the
//! pieces of the snapshot it was built from. A new snapshot rebuilds the
//! config only when one of those pieces changed (pointer comparisons and a
//! diff of the mesh's services that skips what both snapshots share), so a
//! change elsewhere in the mesh costs a stream next to nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use imbl::{OrdMap, ordmap};
use koguma_api::ResourceType;
use koguma_proto::v1 as pb;

use super::build::{self, Inputs};
use super::cluster_policy::MeshPolicies;
use super::index::ServiceEntry;
use super::reachable::Caller;
use super::{ConfigSnapshot, Shared, Watched, transparent};
use crate::store::StoredResource;
use crate::vips::VipMap;

pub enum Refresh {
    /// The dataplane (or its mesh) is gone.
    Deleted,
    Unchanged,
    Rebuilt,
}

/// What the last config was computed from.
struct BuiltFrom {
    dataplane: Arc<StoredResource>,
    mesh: Option<Arc<StoredResource>>,
    vips: Option<Arc<VipMap>>,
    services: OrdMap<String, Shared<ServiceEntry>>,
    policies: Shared<MeshPolicies>,
    /// Services whose cluster is in the config: declared outbounds and, under
    /// transparent proxying, the reachable ones.
    used: BTreeSet<String>,
    /// Under transparent proxying: the services that get a VIP outbound.
    reachable: BTreeSet<String>,
    transparent: bool,
}

pub struct DataplaneView {
    mesh: String,
    name: String,
    node_tp: Option<pb::TransparentProxy>,
    built: Option<(BuiltFrom, pb::ProxyConfig)>,
}

impl DataplaneView {
    pub fn new(mesh: &str, name: &str, node_tp: Option<pb::TransparentProxy>) -> DataplaneView {
        DataplaneView {
            mesh: mesh.to_string(),
            name: name.to_string(),
            node_tp,
            built: None,
        }
    }

    /// The config last built (before certificates are added).
    pub fn config(&self) -> Option<&pb::ProxyConfig> {
        self.built.as_ref().map(|(_, c)| c)
    }

    /// What a new snapshot has to change for this view to rebuild: its
    /// dataplane, its mesh, the services its config sends to and its own
    /// inbounds' services (their permissions), and under transparent
    /// proxying every service of the mesh and its VIPs.
    pub fn watched(&self) -> Watched {
        let mut watched = Watched {
            mesh: self.mesh.clone(),
            dataplane: self.name.clone(),
            ..Watched::default()
        };
        if let Some((from, _)) = &self.built {
            watched.services = from.used.clone();
            watched.mesh_wide = from.transparent;
            if let Some(net) = from
                .dataplane
                .resource
                .as_dataplane()
                .and_then(|d| d.networking())
            {
                watched.services.extend(
                    net.inbound
                        .iter()
                        .map(|i| i.service().to_string())
                        .filter(|s| !s.is_empty()),
                );
            }
        }
        watched
    }

    /// The digest of `config` (this view's config, with certificates
    /// added): clusters of the index count by the hash it computed once.
    pub fn digest(&self, config: &pb::ProxyConfig) -> koguma_proto::ConfigDigest {
        let services = self.built.as_ref().map(|(from, _)| &from.services);
        koguma_proto::ConfigDigest::of(config, |c| {
            let Some(entry) = services.and_then(|s| s.get(&c.name)) else {
                return koguma_proto::cluster_hash(c);
            };
            // This dataplane's policies on top of the shared cluster: the
            // shared hash folded with the policy's, without hashing the
            // endpoints again.
            match &c.policy {
                None if entry.cluster == *c => entry.cluster_hash,
                Some(policy) if same_but_policy(&entry.cluster, c) => {
                    koguma_proto::policy_hash(entry.cluster_hash, policy)
                }
                _ => koguma_proto::cluster_hash(c),
            }
        })
    }

    pub fn refresh(&mut self, snapshot: &ConfigSnapshot) -> Refresh {
        let (mesh, name) = (self.mesh.as_str(), self.name.as_str());
        let Some(stored) = snapshot.catalog.get(ResourceType::Dataplane, mesh, name) else {
            return Refresh::Deleted;
        };
        let Some(dp) = stored.resource.as_dataplane() else {
            return Refresh::Deleted;
        };
        let Some(net) = dp.networking() else {
            return Refresh::Deleted;
        };
        let Some(ctx) = snapshot.index.meshes.get(mesh) else {
            return Refresh::Deleted;
        };
        // Only services (their endpoints or permissions) or VIPs changed: the
        // reachable set is updated from the services that did; anything else
        // (the dataplane, its mesh, a first build) computes it from scratch.
        let incremental = match &mut self.built {
            Some((from, config))
                if same(&from.dataplane, stored)
                    && opt_same(&from.mesh, &ctx.mesh)
                    && from.policies == ctx.policies =>
            {
                // VIPs matter under transparent proxying only, and only
                // those of the services it reaches (a new service brings a
                // new VIP map: nobody else cares).
                let mut touched = from.transparent
                    && !opt_ptr_eq(&from.vips, &ctx.vips)
                    && from
                        .reachable
                        .iter()
                        .any(|s| vip(&from.vips, s) != vip(&ctx.vips, s));
                // Equal but not the same: keep the new pointers, so that
                // the next check is a pointer comparison again.
                from.dataplane = stored.clone();
                from.mesh = ctx.mesh.clone();
                if !touched && from.services.ptr_eq(&ctx.services) {
                    from.vips = ctx.vips.clone();
                    return Refresh::Unchanged;
                }
                let mut reachable = from.reachable.clone();
                let caller = from.transparent.then(|| Caller::new(ctx, mesh, dp));
                for item in from.services.diff(&ctx.services) {
                    let (service, entry) = match item {
                        ordmap::DiffItem::Add(s, e) => (s, Some(e)),
                        ordmap::DiffItem::Update { new, .. } => (new.0, Some(new.1)),
                        ordmap::DiffItem::Remove(s, _) => (s, None),
                    };
                    touched |= from.used.contains(service);
                    // Its own inbounds enforce what the entry says of their tags.
                    for (inbound, listener) in net.inbound.iter().zip(&config.inbounds) {
                        if inbound.service() == service && listener.permissions.is_some() {
                            let now = entry
                                .and_then(|e| e.permissions_of(name, inbound.port, &inbound.tags));
                            touched |= now != listener.permissions.as_ref();
                        }
                    }
                    if let Some(caller) = &caller {
                        let may = entry.is_some_and(|e| caller.may_reach(service, e));
                        let changed = if may {
                            reachable.insert(service.clone())
                        } else {
                            reachable.remove(service)
                        };
                        touched |= changed;
                    }
                }
                if !touched {
                    from.services = ctx.services.clone();
                    from.vips = ctx.vips.clone();
                    from.reachable = reachable;
                    return Refresh::Unchanged;
                }
                Some(reachable)
            }
            _ => None,
        };
        let passthrough = ctx
            .mesh
            .as_ref()
            .and_then(|m| m.resource.as_mesh())
            .is_none_or(|m| m.passthrough());
        let transparent_proxy = transparent::settings(self.node_tp.as_ref(), net, passthrough);
        let transparent = transparent_proxy.is_some();
        let reachable = match (transparent, incremental) {
            (false, _) => BTreeSet::new(),
            (true, Some(reachable)) => reachable,
            (true, None) => Caller::new(ctx, mesh, dp).reachable(ctx),
        };
        let config = build::build(
            ctx,
            Inputs {
                catalog: &snapshot.catalog,
                mesh,
                name,
                net,
                transparent_proxy,
                reachable: &reachable,
            },
        );
        let used = net
            .outbound
            .iter()
            .map(|o| o.service().to_string())
            .chain(reachable.iter().cloned())
            .collect();
        let from = BuiltFrom {
            dataplane: stored.clone(),
            mesh: ctx.mesh.clone(),
            vips: ctx.vips.clone(),
            services: ctx.services.clone(),
            policies: ctx.policies.clone(),
            used,
            reachable,
            transparent,
        };
        self.built = Some((from, config));
        Refresh::Rebuilt
    }
}

/// Whether `c` is `shared` with a policy added.
fn same_but_policy(shared: &pb::Cluster, c: &pb::Cluster) -> bool {
    shared.policy.is_none()
        && shared.name == c.name
        && shared.identity == c.identity
        && shared.sni == c.sni
        && shared.unavailable == c.unavailable
        && shared.endpoints == c.endpoints
}

/// Unchanged as the catalog's diff sees it: the same value (the same
/// pointer, most of the time; a resource applied again as it was, else).
fn same<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

fn opt_same<T: PartialEq>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn opt_ptr_eq<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn vip<'a>(map: &'a Option<Arc<VipMap>>, service: &str) -> Option<&'a std::net::Ipv4Addr> {
    map.as_ref().and_then(|m| m.get(service))
}
