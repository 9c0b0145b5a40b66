//! What the global knows of its zones, in memory: each zone's sync
//! streams (connect and disconnect times, versions, deltas sent and ACKed,
//! in Kuma's `ZoneInsight` shape; a zone is online while a stream is open),
//! and the insights of zones' dataplanes as their zones report them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Value, json};

use super::session::SyncStats;

/// Kuma keeps this many past subscriptions per zone.
const KEEP: usize = 5;

struct Subscription {
    id: String,
    global_instance_id: String,
    zone_instance_id: String,
    version: String,
    connect_time: SystemTime,
    disconnect_time: Option<SystemTime>,
    stats: Arc<SyncStats>,
}

#[derive(Default)]
pub struct ZoneInsights {
    zones: Mutex<BTreeMap<String, Vec<Subscription>>>,
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl ZoneInsights {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Subscription>>> {
        self.zones.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connected(
        &self,
        zone: &str,
        id: &str,
        global_instance_id: &str,
        zone_instance_id: &str,
        version: &str,
        stats: Arc<SyncStats>,
    ) {
        let mut zones = self.lock();
        let subs = zones.entry(zone.to_string()).or_default();
        subs.push(Subscription {
            id: id.into(),
            global_instance_id: global_instance_id.into(),
            zone_instance_id: zone_instance_id.into(),
            version: version.into(),
            connect_time: SystemTime::now(),
            disconnect_time: None,
            stats,
        });
        let excess = subs.len().saturating_sub(KEEP);
        subs.drain(..excess);
    }

    pub fn is_online(&self, zone: &str) -> bool {
        self.lock()
            .get(zone)
            .and_then(|subs| subs.last())
            .is_some_and(|s| s.disconnect_time.is_none())
    }

    pub fn disconnected(&self, zone: &str, id: &str) {
        if let Some(s) = self
            .lock()
            .get_mut(zone)
            .and_then(|subs| subs.iter_mut().find(|s| s.id == id))
        {
            s.disconnect_time = Some(SystemTime::now());
        }
    }

    /// Kuma's `ZoneInsight` JSON, empty subscriptions for a zone never seen
    /// by this global instance.
    pub fn insight_json(&self, zone: &str) -> Value {
        let zones = self.lock();
        let subs: Vec<Value> = zones
            .get(zone)
            .into_iter()
            .flatten()
            .map(|s| {
                let stats = &s.stats;
                let last = *stats.last_update.lock().unwrap_or_else(|p| p.into_inner());
                json!({
                    "id": s.id,
                    "globalInstanceId": s.global_instance_id,
                    "zoneInstanceId": s.zone_instance_id,
                    "connectTime": time(s.connect_time),
                    "disconnectTime": s.disconnect_time.map(time),
                    "status": {
                        "lastUpdateTime": last.map(time),
                        "total": {
                            "responsesSent": stats.sent.load(Ordering::Relaxed),
                            "responsesAcknowledged": stats.acked.load(Ordering::Relaxed),
                            "responsesRejected": stats.rejected.load(Ordering::Relaxed),
                        },
                    },
                    "version": {"kumaCp": {"version": s.version}},
                })
            })
            .collect();
        json!({ "subscriptions": subs })
    }
}

struct RemoteInsight {
    zone: String,
    display_name: String,
    value: Value,
    version: String,
}

/// Zones' dataplane insights on the global, by (mesh, name on the global).
/// Not in the catalog: they change with every config a dataplane ACKs, and
/// no dataplane config depends on them.
#[derive(Default)]
pub struct RemoteInsights {
    by_dataplane: Mutex<BTreeMap<(String, String), RemoteInsight>>,
}

impl RemoteInsights {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), RemoteInsight>> {
        self.by_dataplane.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn put(
        &self,
        mesh: &str,
        name: &str,
        zone: &str,
        display_name: &str,
        value: Value,
        version: &str,
    ) {
        self.lock().insert(
            (mesh.into(), name.into()),
            RemoteInsight {
                zone: zone.into(),
                display_name: display_name.into(),
                value,
                version: version.into(),
            },
        );
    }

    pub fn remove(&self, mesh: &str, name: &str) {
        self.lock().remove(&(mesh.to_string(), name.to_string()));
    }

    pub fn get(&self, mesh: &str, name: &str) -> Option<(String, Value)> {
        self.lock()
            .get(&(mesh.to_string(), name.to_string()))
            .map(|i| (i.zone.clone(), i.value.clone()))
    }

    /// (mesh, name in the zone, version) of every insight from `zone`.
    pub fn of_zone(&self, zone: &str) -> Vec<(String, String, String)> {
        self.lock()
            .iter()
            .filter(|(_, i)| i.zone == zone)
            .map(|((mesh, _), i)| (mesh.clone(), i.display_name.clone(), i.version.clone()))
            .collect()
    }
}
