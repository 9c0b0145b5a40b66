//! A zone CP keeps each of its ZoneIngresses' `availableServices` current:
//! for every ready inbound of every local dataplane, its tag set counted
//! per mesh (Kuma's `pkg/xds/ingress`). Other zones weight their traffic to
//! this zone by these counts. Counts follow catalog changes incrementally:
//! a changed dataplane costs its inbounds, not a walk of every dataplane.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use imbl::ordmap::DiffItem;
use koguma_api::{AvailableService, Resource, ResourceType, Spec};

use crate::catalog::Catalog;
use crate::resources::Resources;
use crate::store::{Origin, StoredResource};

type TagSet = (String, BTreeMap<String, String>);

/// How long a burst of dataplane changes is gathered before ingresses are
/// rewritten (Kuma refreshes every second).
const BATCH: Duration = Duration::from_millis(100);

fn add(counts: &mut BTreeMap<TagSet, u32>, r: &StoredResource, sign: i64) {
    // Copies of other zones' dataplanes are not this zone's to offer.
    if r.origin == Origin::Kds {
        return;
    }
    let Some(net) = r.resource.as_dataplane().and_then(|d| d.networking()) else {
        return;
    };
    for inbound in net.inbound.iter().filter(|i| i.is_ready()) {
        let key = (r.resource.meta.mesh.clone(), inbound.tags.clone());
        let n = counts.entry(key.clone()).or_default();
        *n = u32::try_from(i64::from(*n) + sign).unwrap_or(0);
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

/// The list Kuma stores: sorted by mesh, then tags.
fn available(counts: &BTreeMap<TagSet, u32>) -> Vec<AvailableService> {
    counts
        .iter()
        .map(|((mesh, tags), n)| AvailableService {
            mesh: mesh.clone(),
            tags: tags.clone(),
            instances: *n,
            external_service: false,
        })
        .collect()
}

/// Rewrites every local ZoneIngress whose list differs from `services`.
async fn rewrite(resources: &Resources, catalog: &Catalog, services: &[AvailableService]) {
    for stored in catalog.list(ResourceType::ZoneIngress, None) {
        if stored.origin == Origin::Kds {
            continue;
        }
        let Some(zi) = stored.resource.as_zone_ingress() else {
            continue;
        };
        // A draining ingress offers nothing: other zones stop routing to it
        // before its listener closes.
        let offered = if catalog.is_draining("", &stored.resource.meta.name) {
            &[]
        } else {
            services
        };
        if zi.available_services == offered {
            continue;
        }
        let mut updated = zi.clone();
        updated.available_services = offered.to_vec();
        let resource = Resource {
            meta: stored.resource.meta.clone(),
            spec: Spec::ZoneIngress(updated),
        };
        let name = stored.resource.meta.name.clone();
        match resources.upsert(resource, stored.origin).await {
            Ok(_) => {
                tracing::info!(zone_ingress = %name, services = services.len(), "zone ingress availableServices updated")
            }
            Err(e) => {
                tracing::warn!(zone_ingress = %name, error = %e, "cannot update zone ingress availableServices")
            }
        }
    }
}

pub async fn run(resources: Arc<Resources>) {
    let mut rx = resources.subscribe();
    let mut current: Arc<Catalog> = Arc::new(Catalog::default());
    let mut counts: BTreeMap<TagSet, u32> = BTreeMap::new();
    let mut leadership = resources.leadership();
    loop {
        let new = rx.borrow_and_update().clone();
        for d in current.resources.diff(&new.resources) {
            let (key, before, after) = match d {
                DiffItem::Add(k, v) => (k, None, Some(v)),
                DiffItem::Update { old, new } => (old.0, Some(old.1), Some(new.1)),
                DiffItem::Remove(k, v) => (k, Some(v), None),
            };
            if key.0 != ResourceType::Dataplane {
                continue;
            }
            if let Some(b) = before {
                add(&mut counts, b, -1);
            }
            if let Some(a) = after {
                add(&mut counts, a, 1);
            }
        }
        current = new;
        // Zone ingresses are few: each is compared, and written if stale.
        // By the leader only: every instance computes the same lists.
        if resources.is_leader() {
            rewrite(&resources, &current, &available(&counts)).await;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = crate::instances::became_leader(&mut leadership) => {}
        }
        tokio::time::sleep(BATCH).await;
    }
}
