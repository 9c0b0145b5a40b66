//! Kuma's `targetRef` (`api/common/v1alpha1`): what a policy selects, and
//! its validation (`validators.go` `ValidateTargetRef`), shared by every
//! policy type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tags::{self, TagRules, validate_tags};
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// `Dataplane`: the dataplanes whose resource labels all match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `Dataplane`: one inbound, by its `name` (or its port, when unnamed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Kubernetes only; Universal has no namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `Sidecar`, `Gateway`: which kinds of proxy the policy is for. Every
    /// Koguma dataplane is a sidecar, so a list without `Sidecar` selects
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_types: Option<Vec<String>>,
}

/// The kinds `ValidateTargetRef` knows.
pub const KIND_MESH: &str = "Mesh";
pub const KIND_MESH_SUBSET: &str = "MeshSubset";
pub const KIND_MESH_SERVICE: &str = "MeshService";
pub const KIND_MESH_SERVICE_SUBSET: &str = "MeshServiceSubset";
pub const KIND_DATAPLANE: &str = "Dataplane";

/// The kinds a policy's top-level `targetRef` may have on a Universal
/// sidecar (every kind `validate` knows).
pub const POLICY_TARGET_KINDS: &[&str] = &[
    KIND_MESH,
    KIND_MESH_SUBSET,
    KIND_MESH_SERVICE,
    KIND_MESH_SERVICE_SUBSET,
    KIND_DATAPLANE,
];

/// What a validated target ref selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    Mesh,
    /// Every tag must match.
    Subset(BTreeMap<String, String>),
    Service(String),
    /// The inbounds of `service` whose tags also match.
    ServiceSubset(String, BTreeMap<String, String>),
    /// Dataplanes by name or by labels, and optionally one inbound.
    Dataplane {
        name: Option<String>,
        labels: BTreeMap<String, String>,
        section: Option<String>,
    },
}

/// One inbound of one dataplane, as a top-level `targetRef` sees it.
pub struct InboundSubject<'a> {
    pub tags: &'a BTreeMap<String, String>,
    pub dataplane: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub inbound_name: Option<&'a str>,
    pub port: u32,
}

impl Selector {
    /// Kuma orders policies from least to most specific (Mesh, MeshSubset,
    /// MeshService, MeshServiceSubset, Dataplane by labels, by name, by
    /// section). The more specific one wins for the same `from` subset.
    pub fn specificity(&self) -> u8 {
        match self {
            Selector::Mesh => 0,
            Selector::Subset(_) => 1,
            Selector::Service(_) => 2,
            Selector::ServiceSubset(..) => 3,
            Selector::Dataplane {
                section: Some(_), ..
            } => 6,
            Selector::Dataplane { name: Some(_), .. } => 5,
            Selector::Dataplane { .. } => 4,
        }
    }

    /// Whether a caller or an inbound with `tags` is selected. A
    /// `Dataplane` selector needs more than tags: see `selects`.
    pub fn matches(&self, tags: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::Mesh => true,
            Selector::Service(name) => tags.get(tags::SERVICE) == Some(name),
            Selector::Subset(want) => want.iter().all(|(k, v)| tags.get(k) == Some(v)),
            Selector::ServiceSubset(name, want) => {
                tags.get(tags::SERVICE) == Some(name)
                    && want.iter().all(|(k, v)| tags.get(k) == Some(v))
            }
            Selector::Dataplane { .. } => false,
        }
    }

    /// Whether the inbound `subject` is selected.
    pub fn selects(&self, subject: &InboundSubject<'_>) -> bool {
        let Selector::Dataplane {
            name,
            labels,
            section,
        } = self
        else {
            return self.matches(subject.tags);
        };
        name.as_deref().is_none_or(|n| n == subject.dataplane)
            && labels.iter().all(|(k, v)| subject.labels.get(k) == Some(v))
            && section
                .as_deref()
                .is_none_or(|s| subject.inbound_name == Some(s) || s == subject.port.to_string())
    }

    /// Whether the selection depends on which dataplane an inbound is on,
    /// not on its tags alone.
    pub fn is_per_dataplane(&self) -> bool {
        matches!(self, Selector::Dataplane { .. })
    }
}

impl TargetRef {
    /// What it selects; `None` for nothing (an unknown kind, or proxy
    /// types that leave out sidecars).
    pub fn selector(&self) -> Option<Selector> {
        if self
            .proxy_types
            .as_ref()
            .is_some_and(|t| !t.iter().any(|p| p == "Sidecar"))
        {
            return None;
        }
        match self.kind.as_str() {
            KIND_MESH => Some(Selector::Mesh),
            KIND_MESH_SUBSET => Some(Selector::Subset(self.tags.clone())),
            KIND_MESH_SERVICE => self.name.clone().map(Selector::Service),
            KIND_MESH_SERVICE_SUBSET => self
                .name
                .clone()
                .map(|n| Selector::ServiceSubset(n, self.tags.clone())),
            KIND_DATAPLANE => Some(Selector::Dataplane {
                name: self.name.clone().filter(|n| !n.is_empty()),
                labels: self.labels.clone(),
                section: self.section_name.clone().filter(|s| !s.is_empty()),
            }),
            _ => None,
        }
    }

    /// Kuma's `ValidateTargetRef`: `supported` kinds, and per kind the
    /// fields it takes. `inbound_policy`: the policy configures inbounds
    /// (only those may name a `sectionName`).
    pub fn validate(
        &self,
        field: &str,
        supported: &[&str],
        inbound_policy: bool,
        errs: &mut ValidationError,
    ) {
        let at = |f: &str| format!("{field}.{f}");
        let disallowed = |f: &str, set: bool, errs: &mut ValidationError| {
            if set {
                errs.add(at(f), format!("must not be set with kind {:?}", self.kind));
            }
        };
        let name = self.name.as_deref().unwrap_or("");
        let namespace = self.namespace.as_deref().unwrap_or("");
        let section = self.section_name.as_deref().unwrap_or("");
        if self.kind.is_empty() {
            errs.add(at("kind"), "must be defined");
            return;
        }
        for (i, p) in self.proxy_types.iter().flatten().enumerate() {
            if p != "Sidecar" && p != "Gateway" {
                errs.add(
                    at(&format!("proxyTypes[{i}]")),
                    format!("unknown proxy type '{p}': use Sidecar or Gateway"),
                );
            }
        }
        if !supported.contains(&self.kind.as_str()) {
            errs.add(
                at("kind"),
                format!("value '{}' is not supported", self.kind),
            );
            return;
        }
        match self.kind.as_str() {
            KIND_MESH => {
                if !name.is_empty() {
                    errs.add(
                        at("name"),
                        format!("using name with kind {} is not yet supported", self.kind),
                    );
                }
                disallowed("tags", !self.tags.is_empty(), errs);
                disallowed("labels", !self.labels.is_empty(), errs);
                disallowed("namespace", !namespace.is_empty(), errs);
                disallowed("sectionName", !section.is_empty(), errs);
            }
            KIND_DATAPLANE => {
                disallowed("tags", !self.tags.is_empty(), errs);
                if !self.labels.is_empty() && (!name.is_empty() || !namespace.is_empty()) {
                    errs.add(
                        at("labels"),
                        "either labels or name and namespace must be specified",
                    );
                }
                if !inbound_policy && !section.is_empty() {
                    errs.add(at("sectionName"), "can only be used with inbound policies");
                }
            }
            KIND_MESH_SUBSET => {
                disallowed("name", !name.is_empty(), errs);
                validate_tags(&at("tags"), &self.tags, TagRules::default(), errs);
                disallowed("labels", !self.labels.is_empty(), errs);
                disallowed("namespace", !namespace.is_empty(), errs);
                disallowed("sectionName", !section.is_empty(), errs);
            }
            KIND_MESH_SERVICE => {
                check_name(&at("name"), name, errs);
                disallowed("tags", !self.tags.is_empty(), errs);
                if self.labels.is_empty() && name.is_empty() {
                    errs.add(
                        field,
                        format!("name or labels must be set when kind is {}", self.kind),
                    );
                }
                if !self.labels.is_empty() {
                    // Kuma's MeshService resources carry labels; Koguma's
                    // services are `kuma.io/service` names.
                    errs.add(
                        at("labels"),
                        "selecting MeshService resources by labels is not supported: name the service",
                    );
                }
            }
            KIND_MESH_SERVICE_SUBSET => {
                if name.is_empty() {
                    errs.add(at("name"), format!("must be set with kind {}", self.kind));
                }
                check_name(&at("name"), name, errs);
                validate_tags(&at("tags"), &self.tags, TagRules::default(), errs);
                disallowed("labels", !self.labels.is_empty(), errs);
                disallowed("namespace", !namespace.is_empty(), errs);
                disallowed("sectionName", !section.is_empty(), errs);
            }
            _ => {}
        }
    }
}

/// Kuma's `validateName` for service names: `^[0-9a-z.\-_]*$`.
fn check_name(field: &str, name: &str, errs: &mut ValidationError) {
    if !name
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b".-_".contains(&b))
    {
        errs.add(
            field,
            "invalid characters: must consist of lower case alphanumeric characters, '-', '.' and '_'.",
        );
    }
}
