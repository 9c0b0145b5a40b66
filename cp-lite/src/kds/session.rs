//! One sync stream, the same loop on the global and on a zone: send deltas
//! of what this side owns (one in flight, until the other ACKs it), and
//! store and ACK the other side's. Only what differs from what the other
//! side holds is sent, on connect as after; work per catalog change is
//! proportional to what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use imbl::ordmap::DiffItem;
use koguma_api::ResourceType;
use koguma_proto::v1::{KdsAck, KdsDelta, KdsMessage, KdsNack, kds_message::Msg};
use tokio::sync::mpsc;

use super::outgoing::{Outgoing, Sent};
use super::side::{INSIGHT, Key, SECRET, Side, insight_items, key_of, rank, resource_key};
use super::{KdsError, LocalState};
use crate::catalog::Catalog;

/// How long a NACKed resource waits before it is sent again (Kuma: 5 s).
const NACK_BACKOFF: Duration = Duration::from_secs(5);

/// Counters a zone insight shows, per stream.
#[derive(Default)]
pub struct SyncStats {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub rejected: AtomicU64,
    pub last_update: std::sync::Mutex<Option<SystemTime>>,
}

impl SyncStats {
    fn touch(&self) {
        *self.last_update.lock().unwrap_or_else(|p| p.into_inner()) = Some(SystemTime::now());
    }
}

pub struct Session {
    pub side: Side,
    pub local: Arc<LocalState>,
    pub stats: Arc<SyncStats>,
}

/// How often a zone samples its dataplanes' insights for the global.
const INSIGHT_INTERVAL: Duration = Duration::from_secs(1);

struct InFlight {
    nonce: String,
    sent: Sent,
}

impl Session {
    /// Runs until the other side closes the stream (Ok) or breaks it.
    pub async fn run(
        &self,
        mut peer_has: BTreeMap<Key, String>,
        mut inbound: impl Stream<Item = Result<KdsMessage, tonic::Status>> + Unpin,
        out: mpsc::Sender<KdsMessage>,
    ) -> Result<(), KdsError> {
        let mut catalog_rx = self.local.resources.subscribe();
        let mut current: Arc<Catalog> = catalog_rx.borrow_and_update().clone();
        let items = self.side.items(&current, &self.local).await;
        let mut outgoing = Outgoing::new(items, peer_has.keys());
        let mut sampled = self.local.status.generation();
        let mut insight_tick = tokio::time::interval(INSIGHT_INTERVAL);
        insight_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut in_flight: Option<InFlight> = None;
        let mut nacked: Vec<Key> = Vec::new();
        let mut retry = Box::pin(tokio::time::sleep(Duration::from_secs(3600)));
        let mut next_nonce: u64 = 1;
        loop {
            if in_flight.is_none()
                && let Some((delta, sent)) = outgoing.next_delta(&peer_has, next_nonce)
            {
                next_nonce += 1;
                tracing::debug!(peer = %self.side.describe_peer(), upserts = delta.upserts.len(), removals = delta.removals.len(), "sync: sending");
                in_flight = Some(InFlight {
                    nonce: delta.nonce.clone(),
                    sent,
                });
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                out.send(KdsMessage {
                    msg: Some(Msg::Delta(delta)),
                })
                .await
                .map_err(|_| KdsError::Closed)?;
            }
            tokio::select! {
                changed = catalog_rx.changed() => {
                    if changed.is_err() {
                        return Ok(()); // the CP is stopping
                    }
                    let new = catalog_rx.borrow_and_update().clone();
                    self.follow(&current, &new, &mut outgoing).await;
                    current = new;
                }
                msg = inbound.next() => {
                    let msg = match msg {
                        None => return Ok(()),
                        Some(Err(status)) => return Err(KdsError::Stream(status)),
                        Some(Ok(m)) => m,
                    };
                    match msg.msg {
                        Some(Msg::Delta(delta)) => {
                            let ack = self.apply(delta).await;
                            out.send(KdsMessage { msg: Some(Msg::Ack(ack)) })
                                .await
                                .map_err(|_| KdsError::Closed)?;
                        }
                        Some(Msg::Ack(ack)) => {
                            let Some(flight) = in_flight.take_if(|f| f.nonce == ack.nonce) else {
                                return Err(KdsError::Protocol(format!("ACK of unknown nonce {:?}", ack.nonce)));
                            };
                            let removals: BTreeSet<Key> = flight
                                .sent
                                .iter()
                                .filter(|(_, v)| v.is_none())
                                .map(|(k, _)| k.clone())
                                .collect();
                            for (key, version) in flight.sent {
                                match version {
                                    Some(v) => peer_has.insert(key, v),
                                    None => peer_has.remove(&key),
                                };
                            }
                            if ack.nacks.is_empty() {
                                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                            } else {
                                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                            }
                            for nack in ack.nacks {
                                let key = nack.key.as_ref().map(key_of).unwrap_or_default();
                                tracing::warn!(peer = %self.side.describe_peer(), kind = %key.0, mesh = %key.1, name = %key.2, reason = %nack.reason, "sync: the other side rejected a resource; retrying in 5s");
                                // What the other side still holds: nothing it
                                // can use for an upsert, the old copy for a
                                // removal (so that the retry removes again).
                                if removals.contains(&key) {
                                    peer_has.insert(key.clone(), String::new());
                                } else {
                                    peer_has.remove(&key);
                                }
                                nacked.push(key);
                            }
                            if !nacked.is_empty() {
                                retry.as_mut().reset(tokio::time::Instant::now() + NACK_BACKOFF);
                            }
                            self.stats.touch();
                        }
                        other => {
                            return Err(KdsError::Protocol(format!("unexpected message {other:?}")));
                        }
                    }
                }
                _ = insight_tick.tick(), if self.side == Side::Zone => {
                    // Sampled only when some stream changed since.
                    let generation = self.local.status.generation();
                    if generation != sampled {
                        sampled = generation;
                        self.sample_insights(&current, &mut outgoing);
                    }
                }
                _ = &mut retry => {
                    nacked.drain(..).for_each(|k| outgoing.mark(k));
                    retry.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
            }
        }
    }

    /// Marks the insights that changed since the last sample.
    fn sample_insights(&self, catalog: &Catalog, outgoing: &mut Outgoing) {
        let now = insight_items(catalog, &self.local);
        for gone in outgoing.keys_of(INSIGHT, None) {
            if !now.contains_key(&gone) {
                outgoing.unset(gone);
            }
        }
        for (k, item) in now {
            if outgoing
                .get(&k)
                .is_none_or(|old| old.version != item.version)
            {
                outgoing.set(k, item);
            }
        }
    }

    /// Brings what is sent from `old` to `new`: only the keys that changed.
    async fn follow(&self, old: &Catalog, new: &Catalog, outgoing: &mut Outgoing) {
        let mut meshes = Vec::new();
        for diff in old.resources.diff(&new.resources) {
            let (rkey, before) = match diff {
                DiffItem::Add(k, _) => (k, None),
                DiffItem::Update { old, .. } => (old.0, Some(old.1)),
                DiffItem::Remove(k, v) => (k, Some(v)),
            };
            if let Some(before) = before {
                outgoing.unset(resource_key(before));
            }
            if let Some((key, item)) = self.side.items_of(new, rkey) {
                outgoing.set(key, item);
            }
            if rkey.0 == ResourceType::Zone {
                let (send, hold) = self.side.made_in_zone(new, &rkey.2);
                send.into_iter().for_each(|(k, item)| outgoing.set(k, item));
                hold.into_iter().for_each(|k| outgoing.unset(k));
            }
            if rkey.0 == ResourceType::Mesh {
                meshes.push(rkey.2.clone());
            }
        }
        for mesh in meshes {
            for k in outgoing.keys_of(SECRET, Some(&mesh)) {
                outgoing.unset(k);
            }
            for (k, item) in self.side.secrets(new, &self.local, &mesh).await {
                outgoing.set(k, item);
            }
        }
    }

    /// Stores a delta from the other side; what cannot be stored is NACKed
    /// with its reason, the rest stays stored.
    async fn apply(&self, delta: KdsDelta) -> KdsAck {
        let mut nacks = Vec::new();
        let mut upserts = delta.upserts;
        upserts.sort_by_key(|r| r.key.as_ref().map_or(usize::MAX, |k| rank(&k.r#type)));
        for r in &upserts {
            if let Err(reason) = self.side.store(&self.local, r).await {
                let key = r.key.clone().unwrap_or_default();
                tracing::warn!(peer = %self.side.describe_peer(), kind = %key.r#type, mesh = %key.mesh, name = %key.name, %reason, "sync: cannot store a resource; NACKed");
                nacks.push(KdsNack {
                    key: Some(key),
                    reason,
                });
            }
        }
        let mut removals = delta.removals;
        removals.sort_by_key(|k| std::cmp::Reverse(rank(&k.r#type)));
        for key in &removals {
            if let Err(reason) = self.side.remove(&self.local, key).await {
                tracing::warn!(peer = %self.side.describe_peer(), kind = %key.r#type, mesh = %key.mesh, name = %key.name, %reason, "sync: cannot remove a resource; NACKed");
                nacks.push(KdsNack {
                    key: Some(key.clone()),
                    reason,
                });
            }
        }
        if !upserts.is_empty() || !removals.is_empty() {
            tracing::info!(peer = %self.side.describe_peer(), upserts = upserts.len(), removals = removals.len(), rejected = nacks.len(), "sync: stored changes");
        }
        self.stats.touch();
        KdsAck {
            nonce: delta.nonce,
            nacks,
        }
    }
}
