//! What one side of a sync stream sends, and which of its keys may differ
//! from what the other side holds. Deltas are cut from the differing keys
//! in rank order (meshes before what lives in them), at most `MAX_DELTA` at
//! a time.

use std::collections::{BTreeMap, BTreeSet};

use koguma_proto::v1::KdsDelta;

use super::side::{Item, Key, rank, to_wire, wire_key};

/// At most this many resources a delta: a first sync of a large zone goes
/// in several, each well under gRPC's message limits.
pub const MAX_DELTA: usize = 1000;

/// What a delta sent: each key with the version the other side holds once
/// it ACKs (`None`: removed).
pub type Sent = Vec<(Key, Option<String>)>;

pub struct Outgoing {
    mine: BTreeMap<Key, Item>,
    /// Keys to compare with the other side, ordered by rank.
    dirty: BTreeSet<(usize, Key)>,
}

impl Outgoing {
    /// `mine` to be compared key by key with what the other side holds.
    pub fn new<'a>(mine: BTreeMap<Key, Item>, theirs: impl Iterator<Item = &'a Key>) -> Outgoing {
        let mut out = Outgoing {
            dirty: BTreeSet::new(),
            mine: BTreeMap::new(),
        };
        for key in theirs {
            out.mark(key.clone());
        }
        for (key, item) in mine {
            out.set(key, item);
        }
        out
    }

    pub fn get(&self, key: &Key) -> Option<&Item> {
        self.mine.get(key)
    }

    /// `key` is sent as `item` (again, if it differs from the other side's).
    pub fn set(&mut self, key: Key, item: Item) {
        self.mark(key.clone());
        self.mine.insert(key, item);
    }

    /// `key` is no longer sent: the other side removes its copy.
    pub fn unset(&mut self, key: Key) {
        self.mine.remove(&key);
        self.mark(key);
    }

    /// `key` is compared with the other side again at the next delta.
    pub fn mark(&mut self, key: Key) {
        self.dirty.insert((rank(&key.0), key));
    }

    /// The keys of `kind`, of `mesh` when given.
    pub fn keys_of(&self, kind: &str, mesh: Option<&str>) -> Vec<Key> {
        let start = (
            kind.to_string(),
            mesh.unwrap_or_default().to_string(),
            String::new(),
        );
        self.mine
            .range(start..)
            .take_while(|(k, _)| k.0 == kind && mesh.is_none_or(|m| k.1 == m))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The delta that brings the other side from `theirs` closer to mine,
    /// and what it will hold once it ACKs; `None` when nothing differs.
    pub fn next_delta(
        &mut self,
        theirs: &BTreeMap<Key, String>,
        nonce: u64,
    ) -> Option<(KdsDelta, Sent)> {
        let mut delta = KdsDelta {
            nonce: nonce.to_string(),
            ..Default::default()
        };
        let mut sent = Vec::new();
        while sent.len() < MAX_DELTA {
            let Some((_, key)) = self.dirty.pop_first() else {
                break;
            };
            match (self.mine.get(&key), theirs.get(&key)) {
                (Some(item), Some(v)) if item.version == *v => {}
                (Some(item), _) => {
                    delta.upserts.push(to_wire(&key, item));
                    sent.push((key, Some(item.version.clone())));
                }
                (None, Some(_)) => {
                    delta.removals.push(wire_key(&key));
                    sent.push((key, None));
                }
                (None, None) => {}
            }
        }
        (!sent.is_empty()).then_some((delta, sent))
    }
}
