//! Who may call an inbound: MeshTrafficPermission rules as the CP computed
//! them, checked against the caller's verified certificate. Deny rules are
//! checked first, then allow rules; no match denies.

use http::HeaderValue;

use crate::config::{PermissionAction, PermissionRule};

/// The other end of an inbound connection.
#[derive(Debug)]
pub enum Peer {
    /// Mesh mTLS with a verified certificate.
    Mesh {
        uris: Vec<String>,
        /// `x-forwarded-client-cert` for the application: who called.
        xfcc: Option<HeaderValue>,
        /// The server name the caller asked for.
        sni: Option<String>,
    },
    /// Plaintext or the application's own TLS (Permissive mode, or mesh
    /// mTLS off): not authenticated, so not authorized either, as in Kuma.
    Unauthenticated,
}

impl Peer {
    /// The caller's SPIFFE ID, for logs.
    pub fn identity(&self) -> &str {
        match self {
            Peer::Mesh { uris, .. } => uris
                .iter()
                .find(|u| u.starts_with("spiffe://"))
                .map_or("(no SPIFFE ID)", String::as_str),
            Peer::Unauthenticated => "(unauthenticated)",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    Allow,
    /// Allowed, but a rule would deny it (AllowWithShadowDeny).
    ShadowDeny(&'a str),
    /// Denied by a rule (its policy), or by no rule allowing.
    Deny(Option<&'a str>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Permissions {
    rules: Vec<PermissionRule>,
}

impl Permissions {
    pub fn new(mut rules: Vec<PermissionRule>) -> Permissions {
        rules.sort_by_key(|r| r.action != PermissionAction::Deny);
        Permissions { rules }
    }

    pub fn check(&self, peer: &Peer) -> Decision<'_> {
        let Peer::Mesh { uris, sni, .. } = peer else {
            return Decision::Allow;
        };
        let matches = |r: &PermissionRule| {
            r.required_uris.iter().all(|u| uris.contains(u))
                && r.uri_prefix
                    .as_deref()
                    .is_none_or(|p| uris.iter().any(|u| u.starts_with(p)))
                && r.sni
                    .as_deref()
                    .is_none_or(|want| sni.as_deref() == Some(want))
        };
        match self.rules.iter().find(|r| matches(r)) {
            Some(rule) => match rule.action {
                PermissionAction::Deny => Decision::Deny(Some(&rule.policy)),
                PermissionAction::Allow => Decision::Allow,
                PermissionAction::AllowWithShadowDeny => Decision::ShadowDeny(&rule.policy),
            },
            None => Decision::Deny(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: PermissionAction, uris: &[&str]) -> PermissionRule {
        PermissionRule {
            action,
            required_uris: uris.iter().map(|u| u.to_string()).collect(),
            policy: format!("{action:?}"),
            uri_prefix: None,
            sni: None,
        }
    }

    fn peer(uris: &[&str]) -> Peer {
        Peer::Mesh {
            uris: uris.iter().map(|u| u.to_string()).collect(),
            xfcc: None,
            sni: None,
        }
    }

    #[test]
    fn deny_first_then_allow_then_default_deny() {
        let p = Permissions::new(vec![
            rule(PermissionAction::Allow, &[]),
            rule(
                PermissionAction::Deny,
                &["spiffe://m/web", "kuma://version/v1"],
            ),
        ]);
        let web_v1 = peer(&["spiffe://m/web", "kuma://version/v1"]);
        let web_v2 = peer(&["spiffe://m/web", "kuma://version/v2"]);
        assert_eq!(p.check(&web_v1), Decision::Deny(Some("Deny")));
        assert_eq!(p.check(&web_v2), Decision::Allow);
        assert_eq!(Permissions::default().check(&web_v2), Decision::Deny(None));
        assert_eq!(
            Permissions::default().check(&Peer::Unauthenticated),
            Decision::Allow
        );
        let shadow = Permissions::new(vec![rule(
            PermissionAction::AllowWithShadowDeny,
            &["spiffe://m/web"],
        )]);
        assert_eq!(
            shadow.check(&web_v1),
            Decision::ShadowDeny("AllowWithShadowDeny")
        );
    }

    #[test]
    fn prefix_and_server_name_matches() {
        let mut by_prefix = rule(PermissionAction::Allow, &[]);
        by_prefix.uri_prefix = Some("spiffe://m/team-a/".into());
        let mut by_sni = rule(PermissionAction::Deny, &[]);
        by_sni.sni = Some("db.mesh".into());
        let p = Permissions::new(vec![by_prefix, by_sni]);
        let member = peer(&["spiffe://m/team-a/web"]);
        let other = peer(&["spiffe://m/team-b/web"]);
        assert_eq!(p.check(&member), Decision::Allow);
        assert_eq!(p.check(&other), Decision::Deny(None));
        let to_db = Peer::Mesh {
            uris: vec!["spiffe://m/team-a/web".into()],
            xfcc: None,
            sni: Some("db.mesh".into()),
        };
        assert_eq!(p.check(&to_db), Decision::Deny(Some("Deny")));
    }
}
