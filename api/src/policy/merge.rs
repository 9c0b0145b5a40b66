//! Which policies apply to traffic from one proxy to one destination, in
//! Kuma's order, merged into one `default` (`pkg/plugins/policies/core/
//! rules`): later entries override earlier ones field by field (RFC 7396:
//! objects merge, lists and values are replaced).
//!
//! Order: the top-level `targetRef` kind (Mesh < Dataplane < MeshSubset <
//! MeshService < MeshServiceSubset; a Dataplane by labels < by name < with
//! a section), then the `to` kind (Mesh < MeshService), then the name in
//! reverse lexical order, so that of two equally specific policies the one
//! whose name sorts first wins.

use std::collections::BTreeMap;

use serde_json::Value;

use super::AnyPolicy;
use crate::target_ref::{InboundSubject, Selector, TargetRef};

/// The proxy whose outbound traffic a policy may configure.
pub struct Caller<'a> {
    pub name: &'a str,
    /// Its resource labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The tags of each of its inbounds.
    pub inbounds: Vec<&'a BTreeMap<String, String>>,
}

impl Caller<'_> {
    /// Whether a top-level `targetRef` selects this proxy: any of its
    /// inbounds for tag-based kinds, its name or labels for Dataplane.
    pub fn selected_by(&self, target: Option<&TargetRef>) -> bool {
        let Some(selector) = target.map_or(Some(Selector::Mesh), TargetRef::selector) else {
            return false;
        };
        match &selector {
            Selector::Mesh => true,
            Selector::Dataplane { name, labels, .. } => {
                name.as_deref().is_none_or(|n| n == self.name)
                    && labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
            }
            _ => self.inbounds.iter().any(|tags| selector.matches(tags)),
        }
    }
}

/// Kuma's `TargetRefKind` order, with the Dataplane refinements.
fn top_rank(target: Option<&TargetRef>) -> u8 {
    match target.and_then(TargetRef::selector) {
        None | Some(Selector::Mesh) => 10,
        Some(Selector::Dataplane {
            section: Some(_), ..
        }) => 22,
        Some(Selector::Dataplane { name: Some(_), .. }) => 21,
        Some(Selector::Dataplane { .. }) => 20,
        Some(Selector::Subset(_)) => 30,
        Some(Selector::Service(_)) => 50,
        Some(Selector::ServiceSubset(..)) => 80,
    }
}

/// Whether a `to` entry is about `service`, and how specifically.
fn to_rank(target: &TargetRef, service: &str) -> Option<u8> {
    match target.selector()? {
        Selector::Mesh => Some(10),
        Selector::Service(name) if name == service => Some(50),
        Selector::ServiceSubset(name, _) if name == service => Some(80),
        _ => None,
    }
}

/// The `default`s that apply to `caller`'s traffic to `service`, in the
/// order they merge (least specific first).
pub fn applicable<'a>(
    policies: impl IntoIterator<Item = (&'a str, &'a dyn AnyPolicy)>,
    caller: &Caller<'_>,
    service: &str,
) -> Vec<Value> {
    let mut found: Vec<((u8, u8), &str, usize, Value)> = Vec::new();
    for (name, policy) in policies {
        if !caller.selected_by(policy.target_ref()) {
            continue;
        }
        let top = top_rank(policy.target_ref());
        for (i, (target, conf)) in policy.to_items().into_iter().enumerate() {
            if let Some(rank) = to_rank(target, service) {
                found.push(((top, rank), name, i, conf));
            }
        }
    }
    // Reverse lexical by name: the first name merges last and wins; items
    // of one policy keep their order.
    found.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)).then(a.2.cmp(&b.2)));
    found.into_iter().map(|(.., conf)| conf).collect()
}

/// The merged inbound conf (`from`, `rules`) of type `C` for every caller
/// of the inbound `subject`; `None` when no policy sets one.
pub fn merged_inbound<'a, C: serde::de::DeserializeOwned>(
    policies: impl IntoIterator<Item = (&'a str, &'a dyn AnyPolicy)>,
    subject: &InboundSubject<'_>,
) -> Option<C> {
    merged_inbound_by_caller(policies, subject)
        .into_iter()
        .find_map(|(caller, conf)| caller.is_none().then_some(conf))
}

/// A policy's inbound `default`s, each with the caller it is for.
type CallerItems<'a> = Vec<(Option<&'a str>, Value)>;

/// What each caller of the inbound `subject` gets from type `C`'s `from`
/// and `rules` entries, merged in Kuma's order: one entry per service a
/// `from` entry names (the entries for every caller merged beneath its
/// own), sorted by name, then the entry for every other caller (`None`),
/// when some entry is for every caller.
pub fn merged_inbound_by_caller<'a, C: serde::de::DeserializeOwned>(
    policies: impl IntoIterator<Item = (&'a str, &'a dyn AnyPolicy)>,
    subject: &InboundSubject<'_>,
) -> Vec<(Option<String>, C)> {
    let mut found: Vec<(u8, &str, CallerItems)> = Vec::new();
    for (name, policy) in policies {
        let items = policy.inbound_items();
        if items.is_empty() {
            continue;
        }
        let selected = match policy.target_ref() {
            None => true,
            Some(t) => t.selector().is_some_and(|s| s.selects(subject)),
        };
        if selected {
            found.push((top_rank(policy.target_ref()), name, items));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)));
    let items: Vec<(Option<&str>, Value)> =
        found.into_iter().flat_map(|(.., items)| items).collect();
    let mut callers: Vec<Option<&str>> = items.iter().filter_map(|(c, _)| *c).map(Some).collect();
    callers.sort();
    callers.dedup();
    if items.iter().any(|(c, _)| c.is_none()) {
        callers.push(None);
    }
    callers
        .into_iter()
        .filter_map(|caller| {
            let mut confs = items
                .iter()
                .filter(|(c, _)| c.is_none() || *c == caller)
                .map(|(_, v)| v.clone());
            let mut acc = confs.next()?;
            for conf in confs {
                merge_patch(&mut acc, conf);
            }
            let conf = serde_json::from_value(acc).ok()?;
            Some((caller.map(str::to_string), conf))
        })
        .collect()
}

/// RFC 7396: `patch` merged into `base`. Nulls in a patch are skipped
/// (an unset field changes nothing), as Kuma's confs omit them.
pub fn merge_patch(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    continue;
                }
                match b.get_mut(&k) {
                    Some(existing) => merge_patch(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, p) => {
            if !p.is_null() {
                *b = p;
            }
        }
    }
}

/// The merged conf of type `C` for `caller`'s traffic to `service`;
/// `None` when no policy of the type applies.
pub fn merged<'a, C: serde::de::DeserializeOwned>(
    policies: impl IntoIterator<Item = (&'a str, &'a dyn AnyPolicy)>,
    caller: &Caller<'_>,
    service: &str,
) -> Option<C> {
    let mut confs = applicable(policies, caller, service).into_iter();
    let mut acc = confs.next()?;
    for conf in confs {
        merge_patch(&mut acc, conf);
    }
    // Every input was a valid `C`; a merge of valid confs is one too.
    serde_json::from_value(acc).ok()
}

#[cfg(test)]
mod tests;
