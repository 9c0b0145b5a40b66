//! MeshTrafficPermission → the rules one inbound enforces. Policies that
//! select the inbound are applied from least to most specific (Mesh,
//! MeshSubset, MeshService; then by name), so for the same `from` target the
//! most specific policy's action wins. The agent checks deny rules first,
//! then allow rules; no match denies.

use std::collections::BTreeMap;

use koguma_api::{PermissionAction, ResourceType, Selector, tags};
use koguma_proto::v1 as pb;

use crate::catalog::Catalog;

/// The URI SANs a caller's certificate must all carry to match `from`.
fn required_uris(mesh: &str, from: &Selector) -> Vec<String> {
    match from {
        Selector::Mesh => Vec::new(),
        Selector::Service(name) => vec![format!("spiffe://{mesh}/{name}")],
        Selector::Subset(want) => want
            .iter()
            .map(|(k, v)| {
                if k == tags::SERVICE {
                    format!("spiffe://{mesh}/{v}")
                } else {
                    format!("kuma://{k}/{v}")
                }
            })
            .collect(),
    }
}

pub fn for_inbound(
    catalog: &Catalog,
    mesh: &str,
    inbound_tags: &BTreeMap<String, String>,
) -> pb::Permissions {
    let mut policies: Vec<(Selector, &str, &koguma_api::MeshTrafficPermissionSpec)> = catalog
        .list(ResourceType::MeshTrafficPermission, Some(mesh))
        .filter_map(|r| {
            let spec = &r.resource.as_traffic_permission()?.spec;
            let selector = spec.selector()?;
            selector.matches(inbound_tags).then_some((
                selector,
                r.resource.meta.name.as_str(),
                spec,
            ))
        })
        .collect();
    policies.sort_by(|a, b| (a.0.specificity(), a.1).cmp(&(b.0.specificity(), b.1)));
    let mut merged: BTreeMap<Selector, (PermissionAction, &str)> = BTreeMap::new();
    for (_, name, spec) in &policies {
        for from in &spec.from {
            if let Some(sel) = from.target_ref.selector() {
                merged.insert(sel, (from.default.action, name));
            }
        }
    }
    let mut rules: Vec<pb::PermissionRule> = merged
        .into_iter()
        .map(|(sel, (action, policy))| pb::PermissionRule {
            action: pb::PermissionAction::from(action).into(),
            required_uris: required_uris(mesh, &sel),
            policy: policy.to_string(),
        })
        .collect();
    // Deny first; a stable sort keeps the rest in a deterministic order.
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
        let v = serde_json::json!({"type": "MeshTrafficPermission", "mesh": "default", "name": name,
            "spec": {"targetRef": target, "from": from}});
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
            }),
        );
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
        let rules = for_inbound(&c, "default", &backend).rules;
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
        let other = for_inbound(&c, "default", &tags(&[("kuma.io/service", "db")])).rules;
        assert_eq!(other.len(), 2);
        assert_eq!(other[0].action, pb::PermissionAction::Deny as i32);
        assert!(
            for_inbound(&Catalog::default(), "default", &backend)
                .rules
                .is_empty()
        );
    }
}
