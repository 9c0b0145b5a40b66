//! The route policies: `MeshHTTPRoute` (L7 rules: matches, filters,
//! weighted backends) and `MeshTCPRoute` (a weighted split per
//! connection). Each `to` entry names the destination it reroutes; the
//! engine selects and orders them like every policy, and `rules` of equal
//! `matches` merge (Kuma's `mergeKey`).

mod http;
mod tcp;

use serde::{Deserialize, Serialize};

use crate::target_ref::{
    KIND_MESH_SERVICE, KIND_MESH_SERVICE_SUBSET, POLICY_TARGET_KINDS, TargetRef,
};
use crate::validation::ValidationError;

pub use http::{
    HttpFilter, HttpMatch, HttpRouteRule, HttpRuleConf, MeshHttpRoute, PathMatch, PathRewrite,
    QueryParamsMatch, RequestMirror, RequestRedirect, RouteEntry, UrlRewrite, route_table,
};
pub use tcp::{MeshTcpRoute, TcpRouteRule, TcpRuleConf};

/// Where a rule sends traffic: a service, or the instances of a service
/// with some tags (`MeshServiceSubset`), with a weight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    #[serde(flatten)]
    pub target: TargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

impl BackendRef {
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(1)
    }

    pub fn validate(&self, field: &str, errs: &mut ValidationError) {
        self.target.validate(
            field,
            &[KIND_MESH_SERVICE, KIND_MESH_SERVICE_SUBSET],
            false,
            errs,
        );
        if self.port.is_some() {
            errs.add(
                format!("{field}.port"),
                "is only supported for MeshService resources, which koguma does not have: name the service",
            );
        }
    }
}

/// The checks both route types make before their rules: the top-level
/// targetRef, and at least one destination.
pub(crate) fn validate_top(
    target_ref: Option<&TargetRef>,
    destinations: usize,
    errs: &mut ValidationError,
) {
    if let Some(t) = target_ref {
        t.validate("spec.targetRef", POLICY_TARGET_KINDS, false, errs);
    }
    if destinations == 0 {
        errs.add("spec.to", "needs at least one item");
    }
}

/// Validates a `to` list's targetRefs: each names one service.
pub(crate) fn validate_to(field: &str, target: &TargetRef, errs: &mut ValidationError) {
    target.validate(field, &[KIND_MESH_SERVICE], false, errs);
}
