//! `MeshTCPRoute`: the connections to a destination split over weighted
//! backends (`pkg/plugins/policies/meshtcproute`).

use serde::{Deserialize, Serialize};

use super::{BackendRef, validate_to, validate_top};
use crate::policy::{AnyPolicy, json_items};
use crate::registry::SpecType;
use crate::target_ref::TargetRef;
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTcpRoute {
    pub spec: TcpRouteSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub to: Vec<TcpRouteTo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteTo {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub rules: Vec<TcpRouteRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteRule {
    pub default: TcpRuleConf,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRuleConf {
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

impl SpecType for MeshTcpRoute {
    fn validate(&self, errs: &mut ValidationError) {
        validate_top(self.spec.target_ref.as_ref(), self.spec.to.len(), errs);
        for (i, to) in self.spec.to.iter().enumerate() {
            let field = format!("spec.to[{i}]");
            validate_to(&format!("{field}.targetRef"), &to.target_ref, errs);
            // Kuma: exactly one rule per destination.
            if to.rules.len() != 1 {
                errs.add(format!("{field}.rules"), "must have exactly one element");
            }
            for (j, rule) in to.rules.iter().enumerate() {
                let f = format!("{field}.rules[{j}].default.backendRefs");
                if rule.default.backend_refs.is_empty() {
                    errs.add(&f, "must not be empty");
                }
                for (k, b) in rule.default.backend_refs.iter().enumerate() {
                    b.validate(&format!("{f}[{k}]"), errs);
                }
            }
        }
    }

    fn as_policy(&self) -> Option<&dyn AnyPolicy> {
        Some(self)
    }
}

impl AnyPolicy for MeshTcpRoute {
    fn target_ref(&self) -> Option<&TargetRef> {
        self.spec.target_ref.as_ref()
    }

    /// Each destination's one rule, as `{"backendRefs": [...]}`: the most
    /// specific policy's replaces the others' (lists are replaced).
    fn to_items(&self) -> Vec<(&TargetRef, serde_json::Value)> {
        let rules = self.spec.to.iter();
        json_items(rules.filter_map(|t| Some((&t.target_ref, &t.rules.first()?.default))))
    }
}
