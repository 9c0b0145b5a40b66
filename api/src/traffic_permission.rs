//! `MeshTrafficPermission`: who may call the dataplanes a policy selects.
//! Universal form: `type`, `mesh`, `name` at top level, the policy under
//! `spec` (`targetRef`, `from[]`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::registry::SpecType;
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
    #[serde(default)]
    pub from: Vec<From>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct From {
    pub target_ref: TargetRef,
    pub default: PermissionConf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PermissionConf {
    pub action: PermissionAction,
}

pub use koguma_types::PermissionAction;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// What a validated target ref selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    Mesh,
    /// Every tag must match.
    Subset(BTreeMap<String, String>),
    Service(String),
}

impl Selector {
    /// Kuma orders policies from least to most specific: Mesh, MeshSubset,
    /// MeshService. The more specific one wins for the same `from` subset.
    pub fn specificity(&self) -> u8 {
        match self {
            Selector::Mesh => 0,
            Selector::Subset(_) => 1,
            Selector::Service(_) => 2,
        }
    }

    /// Whether an inbound (or a caller) with `tags` is selected.
    pub fn matches(&self, tags: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::Mesh => true,
            Selector::Service(name) => tags.get(crate::tags::SERVICE) == Some(name),
            Selector::Subset(want) => want.iter().all(|(k, v)| tags.get(k) == Some(v)),
        }
    }
}

impl TargetRef {
    pub fn selector(&self) -> Option<Selector> {
        match self.kind.as_str() {
            "Mesh" => Some(Selector::Mesh),
            "MeshSubset" => Some(Selector::Subset(self.tags.clone())),
            "MeshService" => self.name.clone().map(Selector::Service),
            _ => None,
        }
    }

    pub(crate) fn validate(&self, field: &str, errs: &mut ValidationError) {
        let name_set = self.name.as_deref().is_some_and(|n| !n.is_empty());
        match self.kind.as_str() {
            "Mesh" | "MeshSubset" if name_set => errs.add(
                format!("{field}.name"),
                format!("must not be set with kind {}", self.kind),
            ),
            "Mesh" if !self.tags.is_empty() => errs.add(
                format!("{field}.tags"),
                "must not be set with kind Mesh: use MeshSubset",
            ),
            "Mesh" | "MeshSubset" => {}
            "MeshService" if !name_set => {
                errs.add(format!("{field}.name"), "is required with kind MeshService")
            }
            "MeshService" if !self.tags.is_empty() => errs.add(
                format!("{field}.tags"),
                "must not be set with kind MeshService",
            ),
            "MeshService" => {}
            other => errs.add(
                format!("{field}.kind"),
                format!("{other:?} is not supported: expected Mesh, MeshSubset or MeshService"),
            ),
        }
    }
}

impl MeshTrafficPermissionSpec {
    pub fn selector(&self) -> Option<Selector> {
        match &self.target_ref {
            None => Some(Selector::Mesh),
            Some(t) => t.selector(),
        }
    }

    pub fn validate(&self, errs: &mut ValidationError) {
        if let Some(t) = &self.target_ref {
            t.validate("spec.targetRef", errs);
        }
        if self.from.is_empty() {
            errs.add("spec.from", "must have at least one item");
        }
        for (i, f) in self.from.iter().enumerate() {
            f.target_ref
                .validate(&format!("spec.from[{i}].targetRef"), errs);
        }
    }
}
