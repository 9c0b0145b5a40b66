//! Dataplane configs: computed from published snapshots of the catalog and
//! its index, by the DP server for its streams and by the REST API for
//! `_config`. Neither reaches into the other.
//!
//! Writes land in the catalog at once (the REST API reads its own writes);
//! snapshots for configs are published at most once per batching window,
//! so that a burst of registrations costs one index update and one round of
//! config checks, not one per write.

mod beyond;
mod build;
mod cluster_policy;
mod index;
mod interest;
mod listener_policy;
mod locality;
mod permissions;
mod reachable;
mod remote;
mod routes;
mod transparent;
mod view;
mod zone_proxy;

#[cfg(test)]
mod build_tests;
#[cfg(test)]
mod cross_zone_tests;
#[cfg(test)]
mod equivalence_tests;
#[cfg(test)]
mod listener_policy_tests;
#[cfg(test)]
mod test_catalog;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use koguma_proto::v1 as pb;
use tokio::sync::watch;

use crate::catalog::Catalog;

pub use index::{ConfigIndex, ZONE_EGRESS_SERVICE};
pub use interest::{ChangeSet, Interests, Watched};
pub use view::{DataplaneView, Refresh};
pub use zone_proxy::ZoneProxyKind;

/// A shared value whose equality is identity: the index keeps a value's
/// `Arc` while the value does not change, so "same pointer" is "unchanged"
/// and costs nothing to check.
#[derive(Debug, Default)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    pub fn new(value: T) -> Shared<T> {
        Shared(Arc::new(value))
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The catalog as configs are computed from it, with its index.
pub struct ConfigSnapshot {
    pub catalog: Arc<Catalog>,
    pub index: ConfigIndex,
    /// Counts snapshots: a stream that registered what it watches checks it
    /// to catch a snapshot published while it registered.
    pub seq: u64,
    /// What changed since the snapshot before.
    pub changes: ChangeSet,
}

impl ConfigSnapshot {
    pub fn new(catalog: Arc<Catalog>) -> ConfigSnapshot {
        let index = ConfigIndex::build(&catalog);
        ConfigSnapshot {
            catalog,
            index,
            seq: 0,
            changes: ChangeSet::default(),
        }
    }

    fn next(&self, catalog: Arc<Catalog>) -> ConfigSnapshot {
        let (index, changes) = self.index.update(&self.catalog, &catalog);
        ConfigSnapshot {
            catalog,
            index,
            seq: self.seq + 1,
            changes,
        }
    }

    /// The config dataplane `mesh/name` is sent when it announced
    /// `node_tp`, computed from scratch. `None`: no such dataplane.
    pub fn compute(
        &self,
        mesh: &str,
        name: &str,
        node_tp: Option<&pb::TransparentProxy>,
    ) -> Option<pb::ProxyConfig> {
        let mut view = DataplaneView::new(mesh, name, node_tp.cloned());
        match view.refresh(self) {
            Refresh::Deleted => None,
            Refresh::Unchanged | Refresh::Rebuilt => view.config().cloned(),
        }
    }

    /// The config of zone proxy `name`, computed from scratch; `None`: no
    /// such zone proxy.
    pub fn compute_zone_proxy(&self, kind: ZoneProxyKind, name: &str) -> Option<pb::ProxyConfig> {
        zone_proxy::compute(self, kind, name)
    }
}

/// Publishes a snapshot of `catalog` after every change, at most once per
/// `window`, and wakes the streams its changes touch; the task ends when
/// the catalog's sender goes.
pub fn publish(
    mut catalog: watch::Receiver<Arc<Catalog>>,
    window: Duration,
    interests: Arc<Interests>,
) -> watch::Receiver<Arc<ConfigSnapshot>> {
    let first = catalog.borrow_and_update().clone();
    let (tx, rx) = watch::channel(Arc::new(ConfigSnapshot::new(first)));
    tokio::spawn(async move {
        while catalog.changed().await.is_ok() {
            tokio::time::sleep(window).await;
            let latest = catalog.borrow_and_update().clone();
            let next = Arc::new(tx.borrow().next(latest));
            // Published first, then woken: a stream woken reads this one.
            tx.send_replace(next.clone());
            interests.wake(&next.changes);
        }
    });
    rx
}
