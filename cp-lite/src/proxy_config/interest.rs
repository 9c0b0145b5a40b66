//! Who to wake for a change. Each stream registers what its config watches
//! (its dataplane, its mesh, the services it sends to or enforces, or under
//! transparent proxying every service of its mesh); the publisher wakes only
//! the streams a snapshot's changes touch, so a change costs in proportion
//! to the streams it concerns, not to the streams connected.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// What changed in one mesh between two snapshots.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MeshChanges {
    /// The Mesh resource itself (or the mesh is gone): every stream of it.
    pub mesh: bool,
    /// Its VIP map: the transparently proxied streams.
    pub vips: bool,
    /// Services whose entry changed, came or went.
    pub services: BTreeSet<String>,
    /// Dataplanes whose resource changed, came or went.
    pub dataplanes: BTreeSet<String>,
}

/// What changed between two snapshots, by mesh.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ChangeSet {
    pub meshes: BTreeMap<String, MeshChanges>,
}

/// What one stream's config watches.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Watched {
    pub mesh: String,
    pub dataplane: String,
    pub services: BTreeSet<String>,
    /// Every service of the mesh, and its VIPs (transparent proxying).
    pub mesh_wide: bool,
}

impl ChangeSet {
    /// Whether a stream watching `w` has to look at the new snapshot: what
    /// `Interests::wake` finds through its indexes.
    #[cfg(test)]
    pub fn touches(&self, w: &Watched) -> bool {
        let Some(c) = self.meshes.get(&w.mesh) else {
            return false;
        };
        c.mesh
            || c.dataplanes.contains(&w.dataplane)
            || (w.mesh_wide && (c.vips || !c.services.is_empty()))
            || c.services.iter().any(|s| w.services.contains(s))
    }
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    streams: HashMap<u64, (Arc<Notify>, Watched)>,
    /// mesh → its streams.
    by_mesh: HashMap<String, HashSet<u64>>,
    /// (mesh, dataplane) → its streams (one, unless an agent reconnects
    /// before its old stream is gone).
    by_dataplane: HashMap<(String, String), HashSet<u64>>,
    /// (mesh, service) → the streams that watch it.
    by_service: HashMap<(String, String), HashSet<u64>>,
    /// mesh → the streams that watch every service of it.
    mesh_wide: HashMap<String, HashSet<u64>>,
}

impl Registry {
    fn index(&mut self, id: u64, w: &Watched, add: bool) {
        fn edit<K: std::hash::Hash + Eq>(
            map: &mut HashMap<K, HashSet<u64>>,
            key: K,
            id: u64,
            add: bool,
        ) {
            if add {
                map.entry(key).or_default().insert(id);
            } else if let Some(set) = map.get_mut(&key) {
                set.remove(&id);
                if set.is_empty() {
                    map.remove(&key);
                }
            }
        }
        edit(&mut self.by_mesh, w.mesh.clone(), id, add);
        edit(
            &mut self.by_dataplane,
            (w.mesh.clone(), w.dataplane.clone()),
            id,
            add,
        );
        if w.mesh_wide {
            edit(&mut self.mesh_wide, w.mesh.clone(), id, add);
        }
        for s in &w.services {
            edit(&mut self.by_service, (w.mesh.clone(), s.clone()), id, add);
        }
    }
}

#[derive(Default)]
pub struct Interests {
    registry: Mutex<Registry>,
}

impl Interests {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stream of dataplane `mesh/name`, woken for changes to it or its
    /// mesh until it says what else it watches.
    pub fn subscribe(self: &Arc<Self>, mesh: &str, name: &str) -> Subscription {
        let notify = Arc::new(Notify::new());
        let watched = Watched {
            mesh: mesh.to_string(),
            dataplane: name.to_string(),
            ..Watched::default()
        };
        let mut r = self.lock();
        let id = r.next_id;
        r.next_id += 1;
        r.index(id, &watched, true);
        r.streams.insert(id, (notify.clone(), watched));
        Subscription {
            id,
            interests: self.clone(),
            notify,
        }
    }

    /// Wakes every stream `changes` touches.
    pub fn wake(&self, changes: &ChangeSet) {
        let r = self.lock();
        let mut candidates: HashSet<u64> = HashSet::new();
        for (mesh, c) in &changes.meshes {
            if c.mesh {
                candidates.extend(r.by_mesh.get(mesh).into_iter().flatten());
                continue;
            }
            if c.vips || !c.services.is_empty() {
                candidates.extend(r.mesh_wide.get(mesh).into_iter().flatten());
            }
            for s in &c.services {
                let key = (mesh.clone(), s.clone());
                candidates.extend(r.by_service.get(&key).into_iter().flatten());
            }
            for d in &c.dataplanes {
                let key = (mesh.clone(), d.clone());
                candidates.extend(r.by_dataplane.get(&key).into_iter().flatten());
            }
        }
        for id in candidates {
            if let Some((notify, _)) = r.streams.get(&id) {
                notify.notify_one();
            }
        }
    }
}

/// One stream's registration; dropping it unregisters.
pub struct Subscription {
    id: u64,
    interests: Arc<Interests>,
    pub notify: Arc<Notify>,
}

impl Subscription {
    /// Replaces what the stream watches.
    pub fn watch(&self, watched: Watched) {
        let mut r = self.interests.lock();
        let Some((notify, old)) = r.streams.remove(&self.id) else {
            return;
        };
        if old != watched {
            r.index(self.id, &old, false);
            r.index(self.id, &watched, true);
        }
        r.streams.insert(self.id, (notify, watched));
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut r = self.interests.lock();
        if let Some((_, old)) = r.streams.remove(&self.id) {
            r.index(self.id, &old, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(services: &[&str], dataplanes: &[&str]) -> ChangeSet {
        let c = MeshChanges {
            services: services.iter().map(|s| s.to_string()).collect(),
            dataplanes: dataplanes.iter().map(|s| s.to_string()).collect(),
            ..MeshChanges::default()
        };
        ChangeSet {
            meshes: [("default".to_string(), c)].into(),
        }
    }

    #[tokio::test]
    async fn only_the_streams_a_change_touches_are_woken() {
        let interests = Arc::new(Interests::default());
        let web = interests.subscribe("default", "web");
        web.watch(Watched {
            mesh: "default".into(),
            dataplane: "web".into(),
            services: ["backend".to_string()].into(),
            mesh_wide: false,
        });
        let db = interests.subscribe("default", "db");
        let tp = interests.subscribe("default", "tp");
        tp.watch(Watched {
            mesh: "default".into(),
            dataplane: "tp".into(),
            mesh_wide: true,
            ..Watched::default()
        });
        let woken = |s: &Subscription| {
            let n = s.notify.clone();
            async move {
                tokio::time::timeout(std::time::Duration::from_millis(20), n.notified())
                    .await
                    .is_ok()
            }
        };
        let watched = |s: &Subscription| interests.lock().streams[&s.id].1.clone();
        let mut mesh = changed(&[], &[]);
        mesh.meshes.get_mut("default").unwrap().mesh = true;
        let mut vips = changed(&[], &[]);
        vips.meshes.get_mut("default").unwrap().vips = true;
        let cases = [
            (changed(&["backend"], &[]), [true, false, true]),
            (changed(&["other"], &["db"]), [false, true, true]),
            (vips, [false, false, true]),
            // A change to the mesh itself wakes every stream of it.
            (mesh, [true, true, true]),
        ];
        for (changes, expected) in cases {
            interests.wake(&changes);
            let got = [woken(&web).await, woken(&db).await, woken(&tp).await];
            assert_eq!(got, expected, "{changes:?}");
            // The indexes find what the definition says.
            let touched = [&web, &db, &tp].map(|s| changes.touches(&watched(s)));
            assert_eq!(touched, expected, "{changes:?}");
        }
        // A stream that went is forgotten.
        drop(web);
        let r = interests.lock();
        assert_eq!(r.by_service.len(), 0);
        assert!(
            !r.by_dataplane
                .contains_key(&("default".to_string(), "web".to_string()))
        );
    }
}
