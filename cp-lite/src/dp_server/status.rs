//! What the CP knows of each dataplane's stream: online or not, what it was
//! sent, what it acknowledged, and why it rejected what it rejected.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde_json::json;

use crate::catalog::DataplaneKey;

#[derive(Debug, Clone)]
pub struct Rejection {
    pub version: String,
    pub reason: String,
    pub time: SystemTime,
}

#[derive(Debug, Clone)]
pub struct StreamStatus {
    /// The stream whose ACKs and NACKs count: the newest live one.
    pub stream_id: u64,
    /// Every stream of this dataplane that is open now, oldest first. Two
    /// are open when a second agent (or a reconnect racing the old stream's
    /// end) dials in with the same identity; the dataplane is online while
    /// any is.
    pub live: Vec<u64>,
    pub online: bool,
    pub agent_version: String,
    pub connect_time: SystemTime,
    pub disconnect_time: Option<SystemTime>,
    pub last_update: SystemTime,
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    pub last_rejection: Option<Rejection>,
    pub responses_sent: u64,
    pub responses_acked: u64,
    pub responses_rejected: u64,
    pub cert_expiration: Option<SystemTime>,
    pub cert_regenerations: u64,
    /// What the config served on the newest stream was built with beyond
    /// the catalog: the agent's transparent proxying and the certificate
    /// issued to it, so that `_config` shows (and versions) the same.
    pub node_tp: Option<koguma_proto::v1::TransparentProxy>,
    pub cert_der: Option<std::sync::Arc<[u8]>>,
    /// Why some destinations of the config last sent cannot be reached.
    pub warnings: Vec<String>,
}

#[derive(Default)]
pub struct StatusRegistry {
    streams: Mutex<HashMap<DataplaneKey, StreamStatus>>,
    /// Bumped by every change: readers that poll skip unchanged states.
    generation: AtomicU64,
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl StatusRegistry {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<DataplaneKey, StreamStatus>) -> R) -> R {
        f(&mut self.streams.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn with_mut<R>(&self, f: impl FnOnce(&mut HashMap<DataplaneKey, StreamStatus>) -> R) -> R {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.with(f)
    }

    /// Changes so far; equal numbers mean nothing changed in between.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Records a new stream of `key`; returns how many other streams of it
    /// are still open.
    pub fn connected(&self, key: &DataplaneKey, stream_id: u64, agent_version: &str) -> usize {
        let now = SystemTime::now();
        self.with_mut(|m| {
            let mut live: Vec<u64> = m.get(key).map(|s| s.live.clone()).unwrap_or_default();
            let others = live.len();
            live.push(stream_id);
            m.insert(
                key.clone(),
                StreamStatus {
                    stream_id,
                    live,
                    online: true,
                    agent_version: agent_version.to_string(),
                    connect_time: now,
                    disconnect_time: None,
                    last_update: now,
                    sent_version: None,
                    acked_version: None,
                    last_rejection: None,
                    responses_sent: 0,
                    responses_acked: 0,
                    responses_rejected: 0,
                    cert_expiration: None,
                    cert_regenerations: 0,
                    node_tp: None,
                    cert_der: None,
                    warnings: Vec::new(),
                },
            );
            others
        })
    }

    /// Applies `f` to the status of `key` if `stream_id` is still its stream
    /// (a reconnected agent's new stream must not be touched by the old one).
    fn update(&self, key: &DataplaneKey, stream_id: u64, f: impl FnOnce(&mut StreamStatus)) {
        self.with_mut(|m| {
            if let Some(s) = m.get_mut(key).filter(|s| s.stream_id == stream_id) {
                s.last_update = SystemTime::now();
                f(s);
            }
        });
    }

    /// Records a response; `warnings`: what its config cannot reach, and why.
    pub fn sent(&self, key: &DataplaneKey, stream_id: u64, version: &str, warnings: Vec<String>) {
        self.update(key, stream_id, |s| {
            s.sent_version = Some(version.to_string());
            s.responses_sent += 1;
            s.warnings = warnings;
        });
    }

    pub fn acked(&self, key: &DataplaneKey, stream_id: u64, version: &str) {
        self.update(key, stream_id, |s| {
            s.acked_version = Some(version.to_string());
            s.responses_acked += 1;
        });
    }

    pub fn rejected(&self, key: &DataplaneKey, stream_id: u64, version: &str, reason: &str) {
        self.update(key, stream_id, |s| {
            s.responses_rejected += 1;
            s.last_rejection = Some(Rejection {
                version: version.to_string(),
                reason: reason.to_string(),
                time: SystemTime::now(),
            });
        });
    }

    pub fn cert_issued(&self, key: &DataplaneKey, not_after: time::OffsetDateTime, der: &[u8]) {
        let expires = SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(not_after.unix_timestamp().max(0) as u64);
        self.with_mut(|m| {
            if let Some(s) = m.get_mut(key) {
                s.cert_expiration = Some(expires);
                s.cert_regenerations += 1;
                s.cert_der = Some(der.into());
            }
        });
    }

    /// The agent of the newest stream asked for transparent proxying so.
    pub fn node_tp(&self, key: &DataplaneKey, tp: Option<koguma_proto::v1::TransparentProxy>) {
        self.with_mut(|m| {
            if let Some(s) = m.get_mut(key) {
                s.node_tp = tp;
            }
        });
    }

    /// A stream of `key` ended. The dataplane stays online while another
    /// is open, and that one's ACKs count from now on.
    pub fn disconnected(&self, key: &DataplaneKey, stream_id: u64) {
        self.with_mut(|m| {
            let Some(s) = m.get_mut(key) else {
                return;
            };
            s.live.retain(|id| *id != stream_id);
            s.last_update = SystemTime::now();
            match s.live.last() {
                Some(newest) => s.stream_id = *newest,
                None => {
                    s.online = false;
                    s.disconnect_time = Some(SystemTime::now());
                }
            }
        });
    }

    /// How many streams of `key` other than `stream_id` are open.
    pub fn others_open(&self, key: &DataplaneKey, stream_id: u64) -> usize {
        self.with(|m| {
            m.get(key)
                .map_or(0, |s| s.live.iter().filter(|id| **id != stream_id).count())
        })
    }

    /// Whether no stream of `key` is open: its agent is gone (whichever
    /// stream ended last).
    pub fn still_gone(&self, key: &DataplaneKey) -> bool {
        self.with(|m| m.get(key).is_none_or(|s| s.live.is_empty()))
    }

    pub fn get(&self, key: &DataplaneKey) -> Option<StreamStatus> {
        self.with(|m| m.get(key).cloned())
    }

    /// Every dataplane's insight, as the REST API shows it.
    pub fn snapshot(&self, instance: &str) -> Vec<(DataplaneKey, serde_json::Value)> {
        self.with(|m| {
            m.iter()
                .map(|(k, s)| (k.clone(), s.insight_json(instance)))
                .collect()
        })
    }

    pub fn forget(&self, key: &DataplaneKey) {
        self.with_mut(|m| {
            m.remove(key);
        });
    }
}

impl StreamStatus {
    /// Kuma's `dataplaneInsight` shape, plus the rejection reason;
    /// `instance` is the control-plane instance serving the stream.
    pub fn insight_json(&self, instance: &str) -> serde_json::Value {
        json!({
            "online": self.online,
            "lastSentVersion": self.sent_version,
            "lastAckedVersion": self.acked_version,
            "lastRejection": self.last_rejection.as_ref().map(|r| json!({
                "version": r.version,
                "reason": r.reason,
                "time": time(r.time),
            })),
            "warnings": (!self.warnings.is_empty()).then_some(&self.warnings),
            "mTLS": self.cert_expiration.map(|t| json!({
                "certificateExpirationTime": time(t),
                "certificateRegenerations": self.cert_regenerations,
            })),
            "liveStreams": self.live.len(),
            "subscriptions": [{
                "id": self.stream_id.to_string(),
                "controlPlaneInstanceId": instance,
                "connectTime": time(self.connect_time),
                "disconnectTime": self.disconnect_time.map(time),
                "status": {
                    "lastUpdateTime": time(self.last_update),
                    "total": {
                        "responsesSent": self.responses_sent.to_string(),
                        "responsesAcknowledged": self.responses_acked.to_string(),
                        "responsesRejected": self.responses_rejected.to_string(),
                    },
                },
                "version": {"kumaDp": {"version": self.agent_version}},
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dataplane_is_online_and_kept_while_any_of_its_streams_is_open() {
        let status = StatusRegistry::default();
        let key = ("default".to_string(), "backend-1".to_string());
        assert_eq!(status.connected(&key, 1, "v"), 0);
        assert_eq!(status.connected(&key, 2, "v"), 1);
        assert_eq!(status.others_open(&key, 2), 1);
        // The second ends first: the first counts again.
        status.disconnected(&key, 2);
        let s = status.get(&key).unwrap();
        assert!(s.online && s.stream_id == 1, "{s:?}");
        assert!(!status.still_gone(&key));
        status.acked(&key, 1, "abc");
        assert_eq!(
            status.get(&key).unwrap().acked_version.as_deref(),
            Some("abc")
        );
        status.disconnected(&key, 1);
        assert!(status.still_gone(&key));
        assert!(!status.get(&key).unwrap().online);
    }
}
