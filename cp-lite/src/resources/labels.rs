//! What the control plane adds to a resource before storing it.

use koguma_api::{Resource, ResourceType, Spec};

use super::Resources;
use crate::role::{ENV_LABEL, ORIGIN_LABEL, PROXY_TYPE_LABEL, Role, ZONE_LABEL};

impl Resources {
    /// The labels Kuma computes for every resource (`labels.Compute`): the
    /// mesh of a mesh-scoped one, and the kind of proxy a proxy is. A user's
    /// own value is kept (and validated).
    pub(super) fn stamp_labels(resource: &mut Resource) {
        let rtype = resource.resource_type();
        let labels = &mut resource.meta.labels;
        if rtype.is_mesh_scoped() {
            labels
                .entry(koguma_api::MESH_LABEL.into())
                .or_insert_with(|| resource.meta.mesh.clone());
        }
        let proxy_type = match rtype {
            ResourceType::Dataplane => Some("sidecar"),
            ResourceType::ZoneIngress => Some("zoneingress"),
            ResourceType::ZoneEgress => Some("zoneegress"),
            _ => None,
        };
        if let Some(t) = proxy_type {
            labels.insert(PROXY_TYPE_LABEL.into(), t.into());
        }
    }

    /// What a control plane that serves dataplanes makes is marked as its
    /// zone's, as Kuma's zone CP does: origin (and, federated, zone) labels,
    /// the environment, and for a federated zone the `kuma.io/zone` tag on
    /// every inbound (what other zones and the global select and route by).
    pub(super) fn stamp_zone(&self, resource: &mut Resource) {
        if self.role == Role::Global || !resource.resource_type().kds_sync().zone_sends() {
            return;
        }
        let labels = &mut resource.meta.labels;
        labels.insert(ORIGIN_LABEL.into(), "zone".into());
        labels
            .entry(ENV_LABEL.into())
            .or_insert_with(|| "universal".into());
        let Some(zone) = self.role.zone_name() else {
            return;
        };
        labels.insert(ZONE_LABEL.into(), zone.into());
        match &mut resource.spec {
            Spec::Dataplane(d) => {
                for inbound in d.networking.iter_mut().flat_map(|n| &mut n.inbound) {
                    inbound
                        .tags
                        .insert(koguma_api::tags::ZONE.into(), zone.into());
                }
            }
            Spec::ZoneIngress(z) => z.zone = zone.into(),
            Spec::ZoneEgress(z) => z.zone = zone.into(),
            _ => {}
        }
    }
}
