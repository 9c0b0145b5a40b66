//! Zone insights on the global: each zone's sync streams (connect and
//! disconnect times, versions, deltas sent and ACKed), kept in memory, in
//! Kuma's `ZoneInsight` shape. A zone is online while a stream is open.

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
