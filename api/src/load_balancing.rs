//! `MeshLoadBalancingStrategy`: the load balancer of a destination
//! (`loadBalancer`, RoundRobin, LeastRequest, Random, RingHash, Maglev,
//! with hash policies), merged by the policy engine like every `to`
//! policy, and what shapes cross-zone traffic: `localityAwareness` (local
//! zone first, other zones only when no local endpoint is left) and
//! `crossZone.failover` (which zones come next, in order). Intra-zone
//! affinity, the failover threshold and FilterState hashes are refused
//! with a clear error rather than accepted and ignored.

use serde::{Deserialize, Serialize};

use crate::registry::SpecType;
use crate::target_ref::{POLICY_TARGET_KINDS, Selector, TargetRef};
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
    pub load_balancer: Option<LoadBalancerConf>,
    /// Hash policies for RingHash and Maglev, when theirs are not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicyConf>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerConf {
    /// RoundRobin, LeastRequest, RingHash, Random or Maglev.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_robin: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub least_request: Option<LeastRequestConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHashConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MaglevConf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeastRequestConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_request_bias: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHashConf {
    /// XXHash or MurmurHash2: Koguma hashes with its own function either
    /// way (what matters is that one key keeps its endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_function: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ring_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ring_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicyConf>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaglevConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_policies: Option<Vec<HashPolicyConf>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashPolicyConf {
    /// Header, Cookie, Connection, SourceIP, QueryParameter (FilterState
    /// is Envoy's and refused).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<NamedConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionHashConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<NamedConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_state: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedConf {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieConf {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionHashConf {
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "sourceIP")]
    pub source_ip: Option<bool>,
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

const NOT_YET: &str = "is not supported by this version of koguma";

const LB_TYPES: &[&str] = &["RoundRobin", "LeastRequest", "RingHash", "Random", "Maglev"];

fn validate_hash_policies(field: &str, list: &[HashPolicyConf], errs: &mut ValidationError) {
    for (i, h) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let need = |set: bool, what: &str, errs: &mut ValidationError| {
            if !set {
                errs.add(
                    format!("{f}.{what}"),
                    format!("must be defined when type is {}", h.kind),
                );
            }
        };
        match h.kind.as_str() {
            "Header" => need(h.header.as_ref().is_some_and(|n| !n.name.is_empty()), "header", errs),
            "Cookie" => {
                need(h.cookie.as_ref().is_some_and(|c| !c.name.is_empty()), "cookie", errs);
                // Envoy would set the cookie on first contact; Koguma only
                // hashes a cookie the client sends.
                if h.cookie.as_ref().is_some_and(|c| c.ttl.is_some() || c.path.is_some()) {
                    errs.add(format!("{f}.cookie"), format!("ttl and path (generating the cookie) {NOT_YET}"));
                }
            }
            "Connection" => need(h.connection.as_ref().is_some_and(|c| c.source_ip.is_some()), "connection", errs),
            "QueryParameter" => need(h.query_parameter.as_ref().is_some_and(|n| !n.name.is_empty()), "queryParameter", errs),
            "SourceIP" => {}
            "FilterState" => errs.add(format!("{f}.type"), format!("FilterState {NOT_YET}")),
            other => errs.add(
                format!("{f}.type"),
                format!("unknown type '{other}': use Header, Cookie, Connection, SourceIP or QueryParameter"),
            ),
        }
    }
}

fn validate_load_balancer(
    field: &str,
    lb: &LoadBalancerConf,
    root_hashes: bool,
    errs: &mut ValidationError,
) {
    if !LB_TYPES.contains(&lb.kind.as_str()) {
        errs.add(
            format!("{field}.type"),
            format!("unknown type '{}': use {}", lb.kind, LB_TYPES.join(", ")),
        );
        return;
    }
    if let Some(lr) = &lb.least_request {
        if lr.choice_count.is_some_and(|c| c < 2) {
            errs.add(
                format!("{field}.leastRequest.choiceCount"),
                "must be greater than or equal to 2",
            );
        }
        if lr.active_request_bias.is_some() {
            errs.add(format!("{field}.leastRequest.activeRequestBias"), NOT_YET);
        }
    }
    if let Some(rh) = &lb.ring_hash {
        let f = format!("{field}.ringHash");
        if let Some(func) = &rh.hash_function
            && !matches!(func.as_str(), "XXHash" | "MurmurHash2")
        {
            errs.add(
                format!("{f}.hashFunction"),
                format!("unknown hash function '{func}': use XXHash or MurmurHash2"),
            );
        }
        for (name, v) in [
            ("minRingSize", rh.min_ring_size),
            ("maxRingSize", rh.max_ring_size),
        ] {
            if v.is_some_and(|v| !(1..=8_388_608).contains(&v)) {
                errs.add(
                    format!("{f}.{name}"),
                    "must be in inclusive range [1, 8388608]",
                );
            }
        }
        if let (Some(min), Some(max)) = (rh.min_ring_size, rh.max_ring_size)
            && min > max
        {
            errs.add(
                format!("{f}.minRingSize"),
                "must be less than or equal to maxRingSize",
            );
        }
        if let Some(h) = &rh.hash_policies {
            if root_hashes {
                errs.add(
                    format!("{f}.hashPolicies"),
                    "hashPolicies already specified in the root level",
                );
            }
            validate_hash_policies(&format!("{f}.hashPolicies"), h, errs);
        }
    }
    if let Some(m) = &lb.maglev {
        let f = format!("{field}.maglev");
        if let Some(size) = m.table_size
            && (size > 5_000_011 || !is_prime(size))
        {
            errs.add(
                format!("{f}.tableSize"),
                "must be a prime number no larger than 5000011",
            );
        }
        if let Some(h) = &m.hash_policies {
            if root_hashes {
                errs.add(
                    format!("{f}.hashPolicies"),
                    "hashPolicies already specified in the root level",
                );
            }
            validate_hash_policies(&format!("{f}.hashPolicies"), h, errs);
        }
    }
}

fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d: &u32| d.saturating_mul(*d) <= n)
            .all(|d| !n.is_multiple_of(d))
}

impl crate::policy::AnyPolicy for MeshLoadBalancingStrategy {
    fn target_ref(&self) -> Option<&TargetRef> {
        self.spec.target_ref.as_ref()
    }

    fn to_items(&self) -> Vec<(&TargetRef, serde_json::Value)> {
        crate::policy::json_items(self.spec.to.iter().map(|t| (&t.target_ref, &t.default)))
    }
}

impl SpecType for MeshLoadBalancingStrategy {
    fn as_policy(&self) -> Option<&dyn crate::policy::AnyPolicy> {
        Some(self)
    }

    fn validate(&self, errs: &mut ValidationError) {
        let spec = &self.spec;
        if let Some(t) = &spec.target_ref {
            t.validate("spec.targetRef", POLICY_TARGET_KINDS, false, errs);
            // Locality shapes the endpoint order every caller shares.
            let locality = spec
                .to
                .iter()
                .any(|to| to.default.locality_awareness.is_some());
            if t.kind != "Mesh" && locality {
                errs.add(
                    "spec.targetRef.kind",
                    format!(
                        "{:?} is not supported with localityAwareness yet: use Mesh",
                        t.kind
                    ),
                );
            }
        }
        if spec.to.is_empty() {
            errs.add("spec.to", "needs at least one item");
        }
        for (i, to) in spec.to.iter().enumerate() {
            let field = format!("spec.to[{i}]");
            to.target_ref.validate(
                &format!("{field}.targetRef"),
                POLICY_TARGET_KINDS,
                false,
                errs,
            );
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
            if let Some(lb) = &conf.load_balancer {
                validate_load_balancer(
                    &format!("{field}.default.loadBalancer"),
                    lb,
                    conf.hash_policies.is_some(),
                    errs,
                );
            }
            if let Some(h) = &conf.hash_policies {
                validate_hash_policies(&format!("{field}.default.hashPolicies"), h, errs);
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
            "{head}      loadBalancer: {{type: RingHash, ringHash: {{minRingSize: 0, hashPolicies: [{{type: FilterState, filterState: {{key: k}}}}]}}}}\n      localityAwareness:\n        crossZone:\n          failover:\n          - to: {{type: Only}}\n"
        ));
        assert!(
            e.contains("spec.to[0].default.loadBalancer.ringHash.minRingSize"),
            "{e}"
        );
        assert!(
            e.contains("spec.to[0].default.loadBalancer.ringHash.hashPolicies[0].type"),
            "{e}"
        );
        let maglev = errors(&format!(
            "{head}      loadBalancer: {{type: Maglev, maglev: {{tableSize: 65536}}}}\n"
        ));
        assert!(
            maglev.contains("spec.to[0].default.loadBalancer.maglev.tableSize"),
            "{maglev}"
        );
        let ok = errors(&format!(
            "{head}      loadBalancer: {{type: RingHash, ringHash: {{hashPolicies: [{{type: Header, header: {{name: x-user}}}}]}}}}\n"
        ));
        assert_eq!(ok, "");
        assert!(
            e.contains("spec.to[0].default.localityAwareness.crossZone.failover[0].to.zones"),
            "{e}"
        );
    }
}
