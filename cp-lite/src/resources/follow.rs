//! Keeping the catalog current with what other instances write: their
//! changes arrive on the store's change feed (PostgreSQL's NOTIFY); each
//! is read back from the store and published. A periodic full read is the
//! safety net for anything a feed could lose.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use koguma_api::ResourceType;
use tokio::sync::mpsc;

use super::{ResourceError, Resources};
use crate::catalog::{Catalog, ResourceKey};
use crate::store::{Change, Session};
use crate::vips::{self, VipMap};

/// Past this many changes at once, one full read is cheaper than each.
const MANY_CHANGES: usize = 256;

impl Resources {
    /// Follows the store's change feed until the store goes; a full read
    /// every `resync` besides. Does nothing on a store with one writer.
    pub async fn follow(self: Arc<Self>, resync: Duration) {
        let Some(mut changes) = self.store.changes() else {
            return;
        };
        let mut every = tokio::time::interval(resync);
        every.tick().await;
        loop {
            let mut batch = BTreeSet::new();
            tokio::select! {
                change = changes.recv() => {
                    let Some(change) = change else { return };
                    batch.insert(change);
                    while batch.len() <= MANY_CHANGES {
                        match changes.try_recv() {
                            Ok(c) => { batch.insert(c); }
                            Err(mpsc::error::TryRecvError::Empty | mpsc::error::TryRecvError::Disconnected) => break,
                        }
                    }
                }
                _ = every.tick() => { batch.insert(Change::Everything); }
            }
            if let Err(e) = self.apply(batch).await {
                tracing::warn!(error = %e, "cannot read changes from the store; reading everything again shortly");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = self.apply(BTreeSet::from([Change::Everything])).await;
            }
        }
    }

    async fn apply(&self, batch: BTreeSet<Change>) -> Result<(), ResourceError> {
        let _guard = self.lock().await;
        if batch.len() > MANY_CHANGES || batch.contains(&Change::Everything) {
            return self.read_everything().await;
        }
        let mut changed = Vec::new();
        for change in batch {
            match change {
                Change::Resource(key) => {
                    let stored = self.store.get(key.0, &key.1, &key.2).await?;
                    self.publish_if(|c| match stored {
                        Some(s) => {
                            let new = c.resources.get(&key).is_none_or(|r| r.version != s.version);
                            if new {
                                c.resources.insert(key.clone(), Arc::new(s));
                                changed.push(key);
                            }
                            new
                        }
                        None => {
                            let gone = c.resources.remove(&key).is_some();
                            if gone && key.0 == ResourceType::Mesh {
                                c.remove_mesh(&key.2);
                            }
                            gone
                        }
                    });
                }
                Change::Secret { mesh, name } if name == vips::record_name(&mesh) => {
                    let map = self.read_vips(&mesh).await?;
                    self.publish_if(|c| {
                        let new = c.vips.get(&mesh).is_none_or(|m| **m != map);
                        if new {
                            c.vips.insert(mesh, Arc::new(map));
                        }
                        new
                    });
                }
                Change::Secret { mesh, .. } => {
                    self.publish(|c| {
                        *c.secret_epochs.entry(mesh).or_default() += 1;
                    });
                }
                Change::Session(key) => {
                    let draining = self.store.session(&key).await?.is_some_and(|s| s.draining);
                    self.publish_if(|c| c.set_draining(&key, draining));
                }
                Change::Everything => {}
            }
        }
        drop(_guard);
        // Services that came through another instance get VIPs from the
        // leader.
        if self.is_leader() && !changed.is_empty() {
            self.allocate_vips_for(&changed).await?;
        }
        Ok(())
    }

    /// Reads the whole store into the catalog; what did not change keeps
    /// its place (so dataplane configs are rebuilt for what changed only).
    /// The caller holds the write lock.
    pub(super) async fn read_everything(&self) -> Result<(), ResourceError> {
        let stored = self.store.list().await?;
        let sessions = self.store.sessions().await?;
        let meshes: Vec<String> = stored
            .iter()
            .filter(|s| s.resource.resource_type() == ResourceType::Mesh)
            .map(|s| s.resource.meta.name.clone())
            .collect();
        let mut vips = Vec::new();
        for mesh in meshes {
            let map = self.read_vips(&mesh).await?;
            vips.push((mesh, map));
        }
        self.publish_if(|c| {
            // Secrets may have changed unannounced: cached CAs are read again.
            for (mesh, _) in &vips {
                *c.secret_epochs.entry(mesh.clone()).or_default() += 1;
            }
            replace_all(c, stored, &sessions, vips)
        });
        Ok(())
    }
}

fn replace_all(
    c: &mut Catalog,
    stored: Vec<crate::store::StoredResource>,
    sessions: &[Session],
    vips: Vec<(String, VipMap)>,
) -> bool {
    let mut changed = false;
    let mut keep = BTreeSet::new();
    for s in stored {
        let r = &s.resource;
        let key = (r.resource_type(), r.meta.mesh.clone(), r.meta.name.clone());
        keep.insert(key.clone());
        if c.resources
            .get(&key)
            .is_none_or(|old| old.version != s.version)
        {
            c.resources.insert(key, Arc::new(s));
            changed = true;
        }
    }
    let gone: Vec<ResourceKey> = c
        .resources
        .keys()
        .filter(|k| !keep.contains(*k))
        .cloned()
        .collect();
    for key in gone {
        c.resources.remove(&key);
        changed = true;
    }
    let draining: imbl::OrdSet<_> = sessions
        .iter()
        .filter(|s| s.draining)
        .map(|s| s.key.clone())
        .collect();
    if c.draining != draining {
        c.draining = draining;
        changed = true;
    }
    let meshes: BTreeSet<&String> = vips.iter().map(|(m, _)| m).collect();
    let stale: Vec<String> = c
        .vips
        .keys()
        .filter(|m| !meshes.contains(m))
        .cloned()
        .collect();
    for mesh in stale {
        c.vips.remove(&mesh);
        changed = true;
    }
    for (mesh, map) in vips {
        if c.vips.get(&mesh).is_none_or(|m| **m != map) {
            c.vips.insert(mesh, Arc::new(map));
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Origin, StoredResource};

    fn stored(name: &str, version: i64) -> StoredResource {
        let resource = koguma_api::Resource::from_value(serde_json::json!({
            "type": "MeshTimeout", "mesh": "default", "name": name,
            "spec": {"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"connectionTimeout": "1s"}}]}
        }))
        .expect("resource");
        StoredResource {
            resource,
            origin: Origin::Api,
            version,
        }
    }

    fn key(name: &str) -> ResourceKey {
        (ResourceType::MeshTimeout, "default".into(), name.into())
    }

    #[test]
    fn a_full_read_replaces_only_what_changed() {
        let mut c = Catalog::default();
        assert!(replace_all(
            &mut c,
            vec![stored("same", 1), stored("changed", 2), stored("gone", 3)],
            &[],
            vec![],
        ));
        let same = c.resources.get(&key("same")).cloned().expect("same");
        // Nothing new: nothing changes, and the caller publishes nothing.
        let again = vec![stored("same", 1), stored("changed", 2), stored("gone", 3)];
        assert!(!replace_all(&mut c, again, &[], vec![]));
        let session = Session {
            rtype: ResourceType::Dataplane,
            key: ("default".into(), "web-1".into()),
            instance: "other".into(),
            draining: true,
            connect_time: String::new(),
        };
        let now = vec![stored("same", 1), stored("changed", 4), stored("new", 5)];
        assert!(replace_all(&mut c, now, &[session], vec![]));
        // What did not change is the very same value: configs built from it
        // are not rebuilt.
        assert!(Arc::ptr_eq(&same, &c.resources[&key("same")]));
        assert_eq!(c.resources[&key("changed")].version, 4);
        assert!(c.resources.get(&key("gone")).is_none());
        assert!(c.resources.get(&key("new")).is_some());
        assert!(c.is_draining("default", "web-1"));
    }
}
