//! What a service's entry gets from beyond this zone's dataplanes: the
//! ingresses of other zones that offer it (Kuma's weights, the priorities
//! locality gives their zones), or this zone's egress standing for them
//! (`Mesh.routing.zoneEgress`), or, for an ExternalService, the egress that
//! reaches the real host. Cross-zone and external traffic is mesh mTLS only,
//! as in Kuma: zone proxies route by the SNI only mTLS sends.

use std::collections::BTreeMap;

use koguma_proto::v1 as pb;

use super::index::{MeshContext, ZONE_EGRESS_SERVICE};
use super::locality::Locality;
use super::remote::IngressEndpoint;
use crate::catalog::Catalog;

pub struct Beyond<'a> {
    /// Appended after the local endpoints.
    pub endpoints: Vec<pb::Endpoint>,
    /// What each local endpoint weighs (Kuma: the number of remote ingress
    /// coordinates, so that traffic splits by instances).
    pub local_weight: u32,
    /// The tag sets of the instances elsewhere: protocol and permissions.
    pub tag_sets: Vec<&'a BTreeMap<String, String>>,
    /// Why there is no way there, when the mesh's config is the reason.
    pub unavailable: String,
    /// The identity the endpoints present, when not the service's own.
    pub identity: Option<String>,
}

/// This zone's egresses as endpoints of one priority (Kuma: weight 1 each).
fn egress_endpoints(
    egresses: &[(String, u32)],
    priority: u32,
) -> impl Iterator<Item = pb::Endpoint> + '_ {
    egresses.iter().map(move |(address, port)| pb::Endpoint {
        address: address.clone(),
        port: *port,
        weight: 1,
        tags: BTreeMap::new(),
        zone: String::new(),
        priority,
    })
}

impl<'a> Beyond<'a> {
    /// `local`: how many instances the service has in this zone.
    pub fn of(
        catalog: &Catalog,
        ctx: &'a MeshContext,
        egresses: &[(String, u32)],
        mesh: &str,
        service: &str,
        local: usize,
    ) -> Beyond<'a> {
        let mut out = Beyond {
            endpoints: Vec::new(),
            local_weight: 1,
            tag_sets: Vec::new(),
            unavailable: String::new(),
            identity: None,
        };
        let mtls = ctx.mtls_on();
        if let Some(es) = ctx.external_of(service) {
            out.tag_sets.push(&es.tags);
            out.external(ctx, egresses, mesh, service, mtls);
        }
        if let Some(remote) = ctx.remote_of(service).filter(|_| mtls) {
            out.tag_sets.extend(remote.tag_sets.iter());
            let locality = Locality::of(catalog, mesh, service);
            let local_zone = catalog.zone.as_deref();
            if ctx.zone_egress() {
                out.through_egress(
                    &remote.ingresses,
                    &locality,
                    local_zone,
                    egresses,
                    mesh,
                    local,
                );
            } else {
                out.ingresses(&remote.ingresses, &locality, local_zone, service);
            }
        }
        out
    }

    /// An ExternalService: reached through this zone's egress, which
    /// presents the mesh identity `zone-egress` (Kuma's) and originates the
    /// connection to the real host.
    fn external(
        &mut self,
        ctx: &MeshContext,
        egresses: &[(String, u32)],
        mesh: &str,
        service: &str,
        mtls: bool,
    ) {
        if !mtls || !ctx.zone_egress() {
            self.unavailable = format!(
                "ExternalService {service:?} is reached through a zone egress: enable mTLS and routing.zoneEgress on mesh {mesh:?}"
            );
            return;
        }
        if egresses.is_empty() {
            self.unavailable = format!(
                "ExternalService {service:?} is reached through a zone egress, and this zone has none: start one with koguma-dp run --proxy-type egress"
            );
        }
        self.endpoints.extend(egress_endpoints(egresses, 0));
        self.identity = Some(format!("spiffe://{mesh}/{ZONE_EGRESS_SERVICE}"));
    }

    /// Every other zone is reached through this zone's egress, which cannot
    /// tell zones apart: any zone the locality rules allow makes the egress
    /// an endpoint, at the best priority among them.
    fn through_egress(
        &mut self,
        ingresses: &[IngressEndpoint],
        locality: &Locality,
        local_zone: Option<&str>,
        egresses: &[(String, u32)],
        mesh: &str,
        local: usize,
    ) {
        if !ingresses.is_empty() && egresses.is_empty() && local == 0 {
            self.unavailable = format!(
                "mesh {mesh:?} sends cross-zone traffic through a zone egress (routing.zoneEgress), \
                 and this zone has none: start one with koguma-dp run --proxy-type egress"
            );
        }
        let priority = ingresses
            .iter()
            .filter_map(|i| locality.priority(local_zone, &i.zone))
            .min();
        if let Some(priority) = priority {
            self.endpoints.extend(egress_endpoints(egresses, priority));
        }
    }

    /// Each remote ingress weighs its instances; every local endpoint weighs
    /// the number of remote ingresses, so that traffic splits by instances
    /// however many ingresses there are (Kuma's rule).
    fn ingresses(
        &mut self,
        ingresses: &[IngressEndpoint],
        locality: &Locality,
        local_zone: Option<&str>,
        service: &str,
    ) {
        let reachable: Vec<pb::Endpoint> = ingresses
            .iter()
            .filter_map(|i| {
                let tags = BTreeMap::from([
                    (koguma_api::tags::SERVICE.to_string(), service.to_string()),
                    (koguma_api::tags::ZONE.to_string(), i.zone.clone()),
                ]);
                i.endpoint(locality.priority(local_zone, &i.zone)?, tags)
            })
            .collect();
        self.local_weight = u32::try_from(reachable.len()).unwrap_or(u32::MAX).max(1);
        self.endpoints.extend(reachable);
    }
}
