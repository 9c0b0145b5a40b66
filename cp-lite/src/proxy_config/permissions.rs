//! MeshTrafficPermission → the rules one inbound enforces. Policies that
//! select the inbound are applied from least to most specific (Mesh,
//! MeshSubset, MeshService, MeshServiceSubset, Dataplane; then by name), so
//! for the same `from` target the most specific policy's action wins.
//! `rules` policies (Kuma 2.12+) add their matches as they are, in Kuma's
//! precedence: deny, then allowWithShadowDeny, then allow. The agent checks
//! every deny rule first, then the rest in order; no match denies.

use std::collections::BTreeMap;

use koguma_api::{InboundSubject, Match, PermissionAction, ResourceType, Selector, tags};
use koguma_proto::v1 as pb;

use crate::catalog::Catalog;

/// What the permissions of one inbound depend on: its tags and, when a
/// policy of the mesh selects dataplanes themselves (a `Dataplane`
/// targetRef), which dataplane and inbound (by port) it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PermissionKey {
    pub tags: BTreeMap<String, String>,
    pub inbound: Option<(String, u32)>,
}

/// Whether a MeshTrafficPermission of `mesh` selects by dataplane, so that
/// inbounds of equal tags may be treated differently.
pub fn selects_dataplanes(catalog: &Catalog, mesh: &str) -> bool {
    catalog
        .list(ResourceType::MeshTrafficPermission, Some(mesh))
        .filter_map(|r| r.resource.as_traffic_permission()?.spec.selector())
        .any(|s| s.is_per_dataplane())
}

/// The URI SANs a caller's certificate must all carry to match `from`.
fn required_uris(mesh: &str, from: &Selector) -> Vec<String> {
    let tag_uris = |want: &BTreeMap<String, String>| -> Vec<String> {
        want.iter()
            .map(|(k, v)| {
                if k == tags::SERVICE {
                    format!("spiffe://{mesh}/{v}")
                } else {
                    format!("kuma://{k}/{v}")
                }
            })
            .collect()
    };
    match from {
        Selector::Mesh => Vec::new(),
        Selector::Service(name) => vec![format!("spiffe://{mesh}/{name}")],
        Selector::Subset(want) => tag_uris(want),
        Selector::ServiceSubset(name, want) => {
            let mut uris = tag_uris(want);
            uris.push(format!("spiffe://{mesh}/{name}"));
            uris
        }
        // Not a caller kind (validation refuses it in `from`): matches no one.
        Selector::Dataplane { .. } => vec!["kuma://unsupported/dataplane-caller".into()],
    }
}

/// A `rules` match as the agent checks it.
fn match_rule(m: &Match, action: PermissionAction, policy: &str) -> pb::PermissionRule {
    let (mut required_uris, mut uri_prefix) = (Vec::new(), String::new());
    if let Some(id) = &m.spiffe_id {
        if id.kind == "Prefix" {
            uri_prefix = id.value.clone();
        } else {
            required_uris.push(id.value.clone());
        }
    }
    pb::PermissionRule {
        action: pb::PermissionAction::from(action).into(),
        required_uris,
        policy: policy.to_string(),
        uri_prefix,
        sni: m.sni.as_ref().map(|s| s.value.clone()).unwrap_or_default(),
    }
}

/// What an inbound known only by its tags enforces: another zone's, or an
/// external service behind the egress (no dataplane of this zone).
pub fn for_tags(catalog: &Catalog, mesh: &str, tags: &BTreeMap<String, String>) -> pb::Permissions {
    let no_labels = BTreeMap::new();
    let subject = InboundSubject {
        tags,
        dataplane: "",
        labels: &no_labels,
        inbound_name: None,
        port: 0,
    };
    for_inbound(catalog, mesh, &subject)
}

pub fn for_inbound(catalog: &Catalog, mesh: &str, subject: &InboundSubject<'_>) -> pb::Permissions {
    let mut policies: Vec<(Selector, &str, &koguma_api::MeshTrafficPermissionSpec)> = catalog
        .list(ResourceType::MeshTrafficPermission, Some(mesh))
        .filter_map(|r| {
            let spec = &r.resource.as_traffic_permission()?.spec;
            let selector = spec.selector()?;
            selector
                .selects(subject)
                .then_some((selector, r.resource.meta.name.as_str(), spec))
        })
        .collect();
    policies.sort_by(|a, b| (a.0.specificity(), a.1).cmp(&(b.0.specificity(), b.1)));
    let mut merged: BTreeMap<Selector, (PermissionAction, &str)> = BTreeMap::new();
    let mut listed: [Vec<pb::PermissionRule>; 3] = Default::default();
    for (_, name, spec) in &policies {
        for from in &spec.from {
            if let (Some(sel), Some(action)) = (from.target_ref.selector(), from.default.action) {
                merged.insert(sel, (action, name));
            }
        }
        for rule in &spec.rules {
            for (i, (_, action, matches)) in rule.default.lists().iter().enumerate() {
                listed[i].extend(matches.iter().map(|m| match_rule(m, *action, name)));
            }
        }
    }
    let from_rules = merged
        .into_iter()
        .map(|(sel, (action, policy))| pb::PermissionRule {
            action: pb::PermissionAction::from(action).into(),
            required_uris: required_uris(mesh, &sel),
            policy: policy.to_string(),
            uri_prefix: String::new(),
            sni: String::new(),
        });
    let [deny, shadow, allow] = listed;
    let mut rules: Vec<pb::PermissionRule> = deny
        .into_iter()
        .chain(shadow)
        .chain(allow)
        .chain(from_rules)
        .collect();
    // Deny first; a stable sort keeps the rest in their order.
    rules.sort_by_key(|r| r.action != pb::PermissionAction::Deny as i32);
    pb::Permissions { rules }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Origin, StoredResource};
    use koguma_api::Resource;
    use std::sync::Arc;

    fn mtp(c: &mut Catalog, name: &str, target: serde_json::Value, from: serde_json::Value) {
        policy(
            c,
            name,
            serde_json::json!({"targetRef": target, "from": from}),
        );
    }

    fn subject(tags: &BTreeMap<String, String>) -> InboundSubject<'_> {
        static NONE: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();
        InboundSubject {
            tags,
            dataplane: "dp-1",
            labels: NONE.get_or_init(BTreeMap::new),
            inbound_name: None,
            port: 8080,
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn more_specific_policy_wins_and_deny_comes_first() {
        let mut c = Catalog::default();
        mtp(
            &mut c,
            "allow-all",
            serde_json::json!({"kind": "Mesh"}),
            serde_json::json!([{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}},
                               {"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"action": "Deny"}}]),
        );
        mtp(
            &mut c,
            "backend-from-web",
            serde_json::json!({"kind": "MeshService", "name": "backend"}),
            serde_json::json!([{"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"action": "Allow"}},
                               {"targetRef": {"kind": "MeshSubset", "tags": {"version": "v1"}}, "default": {"action": "Deny"}}]),
        );
        let backend = tags(&[("kuma.io/service", "backend")]);
        let rules = for_inbound(&c, "default", &subject(&backend)).rules;
        let summary: Vec<(i32, Vec<String>)> = rules
            .iter()
            .map(|r| (r.action, r.required_uris.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    pb::PermissionAction::Deny as i32,
                    vec!["kuma://version/v1".to_string()]
                ),
                (pb::PermissionAction::Allow as i32, vec![]),
                (
                    pb::PermissionAction::Allow as i32,
                    vec!["spiffe://default/web".to_string()]
                ),
            ]
        );
        // The MeshService policy does not select other services.
        let db = tags(&[("kuma.io/service", "db")]);
        let other = for_inbound(&c, "default", &subject(&db)).rules;
        assert_eq!(other.len(), 2);
        assert_eq!(other[0].action, pb::PermissionAction::Deny as i32);
        assert!(
            for_inbound(&Catalog::default(), "default", &subject(&backend))
                .rules
                .is_empty()
        );
    }

    fn policy(c: &mut Catalog, name: &str, spec: serde_json::Value) {
        let v = serde_json::json!({"type": "MeshTrafficPermission", "mesh": "default", "name": name, "spec": spec});
        let r = Resource::from_value(v).unwrap();
        r.validate().unwrap();
        c.resources.insert(
            (
                ResourceType::MeshTrafficPermission,
                "default".into(),
                name.into(),
            ),
            Arc::new(StoredResource {
                resource: r,
                origin: Origin::Api,
                version: 1,
            }),
        );
    }

    #[test]
    fn rules_come_in_kumas_precedence_and_dataplane_targets_pick_inbounds() {
        let mut c = Catalog::default();
        policy(
            &mut c,
            "rules",
            serde_json::json!({"targetRef": {"kind": "Mesh"}, "rules": [{"default": {
                "allow": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default/"}}],
                "allowWithShadowDeny": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/audit"}}],
                "deny": [{"spiffeID": {"type": "Exact", "value": "spiffe://default/intruder"}, "sni": {"type": "Exact", "value": "backend.mesh"}}]}}]}),
        );
        policy(
            &mut c,
            "payments-8081",
            serde_json::json!({"targetRef": {"kind": "Dataplane", "labels": {"team": "payments"}, "sectionName": "http"},
                "from": [{"targetRef": {"kind": "MeshServiceSubset", "name": "web", "tags": {"version": "v1"}}, "default": {"action": "Deny"}}]}),
        );
        let backend = tags(&[("kuma.io/service", "backend")]);
        let rules = for_inbound(&c, "default", &subject(&backend)).rules;
        let summary: Vec<(i32, Vec<String>, &str, &str)> = rules
            .iter()
            .map(|r| {
                (
                    r.action,
                    r.required_uris.clone(),
                    r.uri_prefix.as_str(),
                    r.sni.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    pb::PermissionAction::Deny as i32,
                    vec!["spiffe://default/intruder".to_string()],
                    "",
                    "backend.mesh"
                ),
                (
                    pb::PermissionAction::AllowWithShadowDeny as i32,
                    vec!["spiffe://default/audit".to_string()],
                    "",
                    ""
                ),
                (
                    pb::PermissionAction::Allow as i32,
                    vec![],
                    "spiffe://default/",
                    ""
                ),
            ]
        );
        // The Dataplane target: by labels and the inbound's name.
        let team = tags(&[("team", "payments")]);
        let on = |name: Option<&'static str>, labels: &BTreeMap<String, String>| {
            let subject = InboundSubject {
                tags: &backend,
                dataplane: "backend-1",
                labels,
                inbound_name: name,
                port: 8081,
            };
            for_inbound(&c, "default", &subject).rules
        };
        let picked = on(Some("http"), &team);
        assert_eq!(picked.len(), 4);
        assert_eq!(
            picked[1].required_uris,
            ["kuma://version/v1", "spiffe://default/web"],
            "MeshServiceSubset callers need the service and its tags"
        );
        assert_eq!(on(Some("grpc"), &team).len(), 3);
        assert_eq!(on(Some("http"), &BTreeMap::new()).len(), 3);
        assert!(selects_dataplanes(&c, "default"));
    }
}
