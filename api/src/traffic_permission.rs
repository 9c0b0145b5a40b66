//! `MeshTrafficPermission`: who may call the dataplanes a policy selects.
//! Universal form: `type`, `mesh`, `name` at top level, the policy under
//! `spec`: `targetRef`, and either `from[]` (callers by kind, each with an
//! action) or, since Kuma 2.12, `rules[]` (callers by SPIFFE ID or SNI,
//! listed under `deny`, `allowWithShadowDeny` and `allow`).

use serde::{Deserialize, Serialize};

use crate::registry::SpecType;
use crate::target_ref::{
    KIND_DATAPLANE, KIND_MESH, KIND_MESH_SERVICE, KIND_MESH_SERVICE_SUBSET, KIND_MESH_SUBSET,
    Selector, TargetRef,
};
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTrafficPermission {
    pub spec: MeshTrafficPermissionSpec,
}

impl SpecType for MeshTrafficPermission {
    fn validate(&self, errs: &mut ValidationError) {
        self.spec.validate(errs);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTrafficPermissionSpec {
    /// Unset selects every dataplane of the mesh, as in Kuma.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<From>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct From {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub default: PermissionConf,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PermissionConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<PermissionAction>,
}

pub use koguma_types::PermissionAction;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub default: RuleConf,
}

/// Deny wins over allowWithShadowDeny, which wins over allow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConf {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Match>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_with_shadow_deny: Vec<Match>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Match>,
}

impl RuleConf {
    /// Each list with the action it stands for, in precedence order.
    pub fn lists(&self) -> [(&'static str, PermissionAction, &[Match]); 3] {
        [
            ("deny", PermissionAction::Deny, &self.deny),
            (
                "allowWithShadowDeny",
                PermissionAction::AllowWithShadowDeny,
                &self.allow_with_shadow_deny,
            ),
            ("allow", PermissionAction::Allow, &self.allow),
        ]
    }
}

/// A caller: every part given must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    #[serde(rename = "spiffeID", default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<SpiffeIdMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<SniMatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpiffeIdMatch {
    /// `Exact` or `Prefix`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SniMatch {
    /// `Exact`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub value: String,
}

impl MeshTrafficPermissionSpec {
    pub fn selector(&self) -> Option<Selector> {
        match &self.target_ref {
            None => Some(Selector::Mesh),
            Some(t) => t.selector(),
        }
    }

    /// Kuma's `meshtrafficpermission/api/v1alpha1/validator.go`.
    pub fn validate(&self, errs: &mut ValidationError) {
        let inbound_policy = !self.from.is_empty() || !self.rules.is_empty();
        if let Some(t) = &self.target_ref {
            let kinds = [
                KIND_MESH,
                KIND_MESH_SUBSET,
                KIND_MESH_SERVICE,
                KIND_MESH_SERVICE_SUBSET,
                KIND_DATAPLANE,
            ];
            t.validate("spec.targetRef", &kinds, inbound_policy, errs);
        }
        if !self.from.is_empty() && !self.rules.is_empty() {
            errs.add("spec", "field 'from' must be empty when 'rules' is defined");
        }
        if !inbound_policy {
            errs.add(
                "spec",
                "at least one of 'from' or 'rules' has to be defined",
            );
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let path = format!("spec.rules[{i}]");
            let lists = rule.default.lists();
            if lists.iter().all(|(_, _, l)| l.is_empty()) {
                errs.add(
                    &path,
                    "at least one of 'allow', 'allowWithShadowDeny', 'deny' has to be defined",
                );
            }
            // Kuma reports them in this order: allow, allowWithShadowDeny, deny.
            for (name, _, matches) in lists.iter().rev() {
                for (j, m) in matches.iter().enumerate() {
                    m.validate(&format!("{path}.{name}[{j}]"), errs);
                }
            }
        }
        let from_kinds = [
            KIND_MESH,
            KIND_MESH_SUBSET,
            KIND_MESH_SERVICE,
            KIND_MESH_SERVICE_SUBSET,
        ];
        for (i, f) in self.from.iter().enumerate() {
            let path = format!("spec.from[{i}]");
            f.target_ref
                .validate(&format!("{path}.targetRef"), &from_kinds, false, errs);
            if f.default.action.is_none() {
                errs.add(format!("{path}.default.action"), "must be defined");
            }
        }
    }
}

impl Match {
    fn validate(&self, path: &str, errs: &mut ValidationError) {
        if let Some(id) = &self.spiffe_id {
            if let Err(why) = check_spiffe_id(&id.value) {
                errs.add(
                    format!("{path}.spiffeID"),
                    format!("must be a valid Spiffe ID: {why}"),
                );
            }
            if !matches!(id.kind.as_str(), "Exact" | "Prefix") {
                errs.add(
                    format!("{path}.spiffeID.type"),
                    format!(
                        "unrecognized type {:?}, supported values are: Exact, Prefix",
                        id.kind
                    ),
                );
            }
        }
        if let Some(sni) = &self.sni {
            match sni.kind.as_str() {
                "Exact" => {}
                "" => errs.add(format!("{path}.sni.type"), "must be set"),
                other => errs.add(
                    format!("{path}.sni.type"),
                    format!("unrecognized type {other:?}, supported values are: Exact"),
                ),
            }
            if sni.value.is_empty() {
                errs.add(format!("{path}.sni.value"), "must be set");
            } else if !crate::dataplane::is_dns_name(&sni.value)
                || sni.value.bytes().any(|b| b.is_ascii_uppercase())
            {
                errs.add(
                    format!("{path}.sni.value"),
                    r"a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                );
            }
        }
    }
}

/// The checks of go-spiffe's `spiffeid.FromString`, with its words.
fn check_spiffe_id(id: &str) -> Result<(), &'static str> {
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return Err("scheme is missing or invalid");
    };
    let (domain, path) = rest.split_once('/').map_or((rest, ""), |(d, p)| (d, p));
    if domain.is_empty() {
        return Err("trust domain is missing");
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b))
    {
        return Err(
            "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores",
        );
    }
    if !path.is_empty() {
        for segment in path.split('/') {
            if segment.is_empty() {
                return Err("path cannot contain empty segments");
            }
            if segment == "." || segment == ".." {
                return Err("path cannot contain dot segments");
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b))
            {
                return Err(
                    "path segment characters are limited to letters, numbers, dots, dashes, and underscores",
                );
            }
        }
    }
    Ok(())
}
