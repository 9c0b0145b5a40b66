//! What this control plane is in a multi-zone deployment, and the rule that
//! follows from it: a resource is changed only where it originates.

use std::collections::BTreeMap;

use koguma_api::{KdsSync, ResourceType};

/// Kuma's labels on resources in multi-zone.
pub const ORIGIN_LABEL: &str = "kuma.io/origin";
pub const ZONE_LABEL: &str = "kuma.io/zone";
pub use koguma_api::DISPLAY_NAME_LABEL;
/// The environment a zone resource was made in (`universal` here).
pub const ENV_LABEL: &str = "kuma.io/env";
/// What kind of proxy a proxy resource is.
pub const PROXY_TYPE_LABEL: &str = "kuma.io/proxy-type";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A single-zone mesh: everything is made and changed here.
    Standalone,
    /// Owns meshes and policies, aggregates zones, serves no dataplanes.
    Global,
    /// A zone CP federated with a global: serves its zone's dataplanes.
    Zone(String),
}

impl Role {
    pub fn zone_name(&self) -> Option<&str> {
        match self {
            Role::Zone(name) => Some(name),
            _ => None,
        }
    }

    /// Why a person may not create, change or delete this resource here
    /// (`None`: they may). `labels` are the stored resource's, or the new
    /// one's when it does not exist yet.
    pub fn refuses_change(
        &self,
        rtype: ResourceType,
        labels: &BTreeMap<String, String>,
    ) -> Option<String> {
        let origin = labels.get(ORIGIN_LABEL).map(String::as_str);
        let kind = rtype.kind();
        match self {
            Role::Standalone => None,
            Role::Global => {
                if rtype.kds_sync().zone_sends() || origin == Some("zone") {
                    let zone = labels
                        .get(ZONE_LABEL)
                        .map_or(String::new(), |z| format!(" (zone {z:?})"));
                    Some(format!(
                        "on the global control plane a {kind} cannot be changed: it is made on the zone control plane of its zone{zone} and synced here. Change it on that zone's control plane"
                    ))
                } else {
                    None
                }
            }
            Role::Zone(me) => {
                let from_other_zone =
                    origin == Some("zone") && labels.get(ZONE_LABEL).is_some_and(|z| z != me);
                if rtype.kds_sync() == KdsSync::GlobalToZones
                    || origin == Some("global")
                    || from_other_zone
                {
                    Some(format!(
                        "on a zone control plane a {kind} synced from the global cannot be changed: {kind} resources are managed by the global control plane. Apply it there; it reaches every zone"
                    ))
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_resource_changes_only_where_it_originates() {
        let none = labels(&[]);
        let zone = Role::Zone("zone-1".into());
        assert!(
            Role::Standalone
                .refuses_change(ResourceType::Mesh, &none)
                .is_none()
        );
        assert!(
            Role::Global
                .refuses_change(ResourceType::Mesh, &none)
                .is_none()
        );
        assert!(
            Role::Global
                .refuses_change(ResourceType::MeshTrafficPermission, &none)
                .is_none()
        );
        assert!(
            Role::Global
                .refuses_change(ResourceType::Dataplane, &none)
                .is_some()
        );
        assert!(
            Role::Global
                .refuses_change(ResourceType::ZoneIngress, &none)
                .is_some()
        );
        assert!(zone.refuses_change(ResourceType::Mesh, &none).is_some());
        assert!(
            zone.refuses_change(ResourceType::MeshTrafficPermission, &none)
                .is_some()
        );
        assert!(
            zone.refuses_change(ResourceType::Dataplane, &none)
                .is_none()
        );
        assert!(
            zone.refuses_change(ResourceType::ZoneIngress, &none)
                .is_none()
        );
        // Another zone's ingress, synced here through the global.
        let other = labels(&[(ORIGIN_LABEL, "zone"), (ZONE_LABEL, "zone-2")]);
        assert!(
            zone.refuses_change(ResourceType::ZoneIngress, &other)
                .is_some()
        );
        let own = labels(&[(ORIGIN_LABEL, "zone"), (ZONE_LABEL, "zone-1")]);
        assert!(
            zone.refuses_change(ResourceType::ZoneIngress, &own)
                .is_none()
        );
        let msg = Role::Global
            .refuses_change(ResourceType::Dataplane, &own)
            .unwrap_or_default();
        assert!(msg.contains("zone \"zone-1\""), "{msg}");
    }
}
