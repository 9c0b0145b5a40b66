//! Which services a transparently proxied dataplane gets a VIP outbound and
//! a `.mesh` name for: those its `reachableServices` lists; else, with mesh
//! mTLS on, those whose MeshTrafficPermission lets it call them (Kuma's
//! "reachable services by MTP", on by default here); else every service.
//! A dataplane is never sent what it may not use.

use std::collections::BTreeSet;

use koguma_api::DataplaneSpec;
use koguma_proto::v1 as pb;

use super::index::{MeshContext, ServiceEntry};
use crate::mesh_ca::workload_uris;

/// The calling dataplane, as reachability sees it.
pub struct Caller {
    /// `reachableServices`, when set.
    listed: Option<BTreeSet<String>>,
    /// With mesh mTLS on: the URI SANs its certificate carries.
    identities: Option<BTreeSet<String>>,
}

impl Caller {
    pub fn new(ctx: &MeshContext, mesh: &str, dp: &DataplaneSpec) -> Caller {
        let listed = dp
            .networking()
            .and_then(|n| n.transparent_proxying.as_ref())
            .map(|t| &t.reachable_services)
            .filter(|l| !l.is_empty())
            .map(|l| l.iter().cloned().collect());
        let identities = ctx
            .mtls_on()
            .then(|| workload_uris(mesh, dp).into_iter().collect());
        Caller { listed, identities }
    }

    pub fn may_reach(&self, service: &str, entry: &ServiceEntry) -> bool {
        if let Some(listed) = &self.listed {
            return listed.contains(service);
        }
        match &self.identities {
            None => true,
            Some(uris) => entry.permissions.values().any(|p| allows(p, uris)),
        }
    }

    /// Every service of the mesh this caller may reach.
    pub fn reachable(&self, ctx: &MeshContext) -> BTreeSet<String> {
        ctx.services
            .iter()
            .filter(|(s, e)| self.may_reach(s, e))
            .map(|(s, _)| s.clone())
            .collect()
    }
}

/// The inbound's own check (forwarder/src/authz.rs): the first rule whose
/// URIs the caller all has decides, deny rules first; no match denies.
fn allows(permissions: &pb::Permissions, uris: &BTreeSet<String>) -> bool {
    let mut rules: Vec<&pb::PermissionRule> = permissions.rules.iter().collect();
    rules.sort_by_key(|r| r.action != pb::PermissionAction::Deny as i32);
    // A rule on the server name cannot be judged before the call: it is
    // taken to match (a deny hides the service, an allow shows it).
    rules
        .into_iter()
        .find(|r| {
            r.required_uris.iter().all(|u| uris.contains(u))
                && (r.uri_prefix.is_empty() || uris.iter().any(|u| u.starts_with(&r.uri_prefix)))
        })
        .is_some_and(|r| r.action != pb::PermissionAction::Deny as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: pb::PermissionAction, uris: &[&str]) -> pb::PermissionRule {
        pb::PermissionRule {
            action: action.into(),
            required_uris: uris.iter().map(|u| u.to_string()).collect(),
            policy: "p".into(),
            ..Default::default()
        }
    }

    #[test]
    fn deny_rules_come_first_and_no_match_denies() {
        let web: BTreeSet<String> = ["spiffe://m/web", "kuma://version/v1"]
            .map(String::from)
            .into();
        let p = pb::Permissions {
            rules: vec![
                rule(pb::PermissionAction::Allow, &[]),
                rule(pb::PermissionAction::Deny, &["kuma://version/v1"]),
            ],
        };
        assert!(!allows(&p, &web));
        let v2: BTreeSet<String> = ["spiffe://m/web".to_string()].into();
        assert!(allows(&p, &v2));
        assert!(!allows(&pb::Permissions::default(), &v2));
        let shadow = pb::Permissions {
            rules: vec![rule(
                pb::PermissionAction::AllowWithShadowDeny,
                &["spiffe://m/web"],
            )],
        };
        assert!(allows(&shadow, &v2));
    }
}
