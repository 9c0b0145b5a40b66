//! `MeshLoadBalancingStrategy`, the part of it that shapes cross-zone
//! traffic: `localityAwareness` (local zone first, other zones only when no
//! local endpoint is left) and `crossZone.failover` (which zones come next,
//! in order). Its other knobs (load balancer types, hash policies,
//! intra-zone affinity, failover threshold) are refused with a clear error
//! rather than accepted and ignored: the policy engine brings them.

use serde::{Deserialize, Serialize};

use crate::registry::SpecType;
use crate::target_ref::{Selector, TargetRef};
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshLoadBalancingStrategy {
    pub spec: LoadBalancingSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub to: Vec<LoadBalancingTo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancingTo {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub default: LoadBalancingConf,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancingConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_awareness: Option<LocalityAwareness>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityAwareness {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_zone: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_zone: Option<CrossZone>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrossZone {
    #[serde(default)]
    pub failover: Vec<Failover>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_threshold: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<FromZones>,
    pub to: ToZones,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromZones {
    pub zones: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToZones {
    #[serde(rename = "type")]
    pub kind: ToZoneType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToZoneType {
    None,
    Only,
    Any,
    AnyExcept,
}

impl LoadBalancingSpec {
    /// Whom the policy configures: every sidecar of the mesh (only `Mesh`
    /// is taken for now).
    pub fn selector(&self) -> Option<Selector> {
        match &self.target_ref {
            None => Some(Selector::Mesh),
            Some(t) => t.selector(),
        }
    }
}

impl LocalityAwareness {
    pub fn enabled(&self) -> bool {
        !self.disabled.unwrap_or(false)
    }

    pub fn failover(&self) -> &[Failover] {
        self.cross_zone.as_ref().map_or(&[], |c| &c.failover)
    }
}

/// Every kind `TargetRef::validate` knows: which of them this policy takes
/// is checked after, in its own words.
const ALL_KINDS: &[&str] = &[
    "Mesh",
    "MeshSubset",
    "MeshService",
    "MeshServiceSubset",
    "Dataplane",
];

const NOT_YET: &str = "is not supported by this version of koguma-cp (only localityAwareness.disabled and crossZone.failover are)";

impl SpecType for MeshLoadBalancingStrategy {
    fn validate(&self, errs: &mut ValidationError) {
        let spec = &self.spec;
        if let Some(t) = &spec.target_ref {
            t.validate("spec.targetRef", ALL_KINDS, false, errs);
            if t.kind != "Mesh" {
                errs.add(
                    "spec.targetRef.kind",
                    format!("{:?} is not supported yet: use Mesh", t.kind),
                );
            }
        }
        if spec.to.is_empty() {
            errs.add("spec.to", "needs at least one item");
        }
        for (i, to) in spec.to.iter().enumerate() {
            let field = format!("spec.to[{i}]");
            to.target_ref
                .validate(&format!("{field}.targetRef"), ALL_KINDS, false, errs);
            if !matches!(to.target_ref.kind.as_str(), "Mesh" | "MeshService") {
                errs.add(
                    format!("{field}.targetRef.kind"),
                    format!(
                        "{:?} is not supported: use Mesh or MeshService",
                        to.target_ref.kind
                    ),
                );
            }
            let conf = &to.default;
            if conf.load_balancer.is_some() {
                errs.add(format!("{field}.default.loadBalancer"), NOT_YET);
            }
            if conf.hash_policies.is_some() {
                errs.add(format!("{field}.default.hashPolicies"), NOT_YET);
            }
            let Some(la) = &conf.locality_awareness else {
                continue;
            };
            let la_field = format!("{field}.default.localityAwareness");
            if la.local_zone.is_some() {
                errs.add(format!("{la_field}.localZone"), NOT_YET);
            }
            let Some(cz) = &la.cross_zone else {
                continue;
            };
            if cz.failover_threshold.is_some() {
                errs.add(format!("{la_field}.crossZone.failoverThreshold"), NOT_YET);
            }
            for (j, f) in cz.failover.iter().enumerate() {
                let f_field = format!("{la_field}.crossZone.failover[{j}]");
                if f.from.as_ref().is_some_and(|from| from.zones.is_empty()) {
                    errs.add(format!("{f_field}.from.zones"), "must not be empty");
                }
                let zones = f.to.zones.as_ref().map_or(0, Vec::len);
                match f.to.kind {
                    ToZoneType::Only | ToZoneType::AnyExcept if zones == 0 => errs.add(
                        format!("{f_field}.to.zones"),
                        "must not be empty when type is Only or AnyExcept",
                    ),
                    ToZoneType::None | ToZoneType::Any if zones > 0 => errs.add(
                        format!("{f_field}.to.zones"),
                        "must be empty when type is None or Any",
                    ),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validation::errors_of as errors;

    #[test]
    fn what_is_not_enforced_yet_is_refused_by_field() {
        let head = "type: MeshLoadBalancingStrategy\nmesh: default\nname: lb\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n";
        let ok = format!(
            "{head}      localityAwareness:\n        crossZone:\n          failover:\n          - from: {{zones: [a]}}\n            to: {{type: Only, zones: [b]}}\n"
        );
        assert_eq!(errors(&ok), "");
        let e = errors(&format!(
            "{head}      loadBalancer: {{type: RingHash}}\n      localityAwareness:\n        crossZone:\n          failover:\n          - to: {{type: Only}}\n"
        ));
        assert!(e.contains("spec.to[0].default.loadBalancer"), "{e}");
        assert!(
            e.contains("spec.to[0].default.localityAwareness.crossZone.failover[0].to.zones"),
            "{e}"
        );
    }
}
