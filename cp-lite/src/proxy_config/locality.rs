//! Which zones a service's endpoints come from, and in what order, for the
//! callers of this zone (Kuma's locality-aware load balancing): with it
//! off, every zone shares priority 0 and traffic spreads by weight; with it
//! on (`Mesh.routing.localityAwareLoadBalancing`, or a
//! MeshLoadBalancingStrategy whose `localityAwareness` is not disabled),
//! this zone is priority 0 and the others come after, in the order its
//! `crossZone.failover` gives, or all at priority 1 without one.

use koguma_api::{Failover, LocalityAwareness, ResourceType, Selector, ToZoneType};

use crate::catalog::Catalog;

#[derive(Debug, Default, PartialEq)]
pub struct Locality {
    pub aware: bool,
    pub failover: Vec<Failover>,
}

impl Locality {
    /// What applies to callers of `service` in `mesh`: the most specific
    /// `to` of the mesh's MeshLoadBalancingStrategies (MeshService over
    /// Mesh; among equals the last by name, as Kuma merges them), else the
    /// mesh's flag.
    pub fn of(catalog: &Catalog, mesh: &str, service: &str) -> Locality {
        let mut chosen: Option<(u8, &LocalityAwareness)> = None;
        for policy in catalog.list(ResourceType::MeshLoadBalancingStrategy, Some(mesh)) {
            let Some(p) = policy.resource.as_load_balancing() else {
                continue;
            };
            if p.spec.selector() != Some(Selector::Mesh) {
                continue;
            }
            for to in &p.spec.to {
                let Some(selector) = to.target_ref.selector() else {
                    continue;
                };
                let Some(la) = &to.default.locality_awareness else {
                    continue;
                };
                let matches = match &selector {
                    Selector::Mesh => true,
                    Selector::Service(s) => s == service,
                    _ => false,
                };
                let rank = selector.specificity();
                if matches && chosen.is_none_or(|(r, _)| rank >= r) {
                    chosen = Some((rank, la));
                }
            }
        }
        match chosen {
            Some((_, la)) => Locality {
                aware: la.enabled(),
                failover: la.failover().to_vec(),
            },
            None => Locality {
                aware: catalog.mesh(mesh).is_some_and(|m| m.locality_aware()),
                failover: Vec::new(),
            },
        }
    }

    /// The priority of the endpoints in `zone` for callers in `local`;
    /// `None`: that zone is not used at all.
    pub fn priority(&self, local: Option<&str>, zone: &str) -> Option<u32> {
        if !self.aware {
            return Some(0);
        }
        if local == Some(zone) {
            return Some(0);
        }
        if self.failover.is_empty() {
            return Some(1);
        }
        let applicable = self.failover.iter().filter(|f| {
            f.from
                .as_ref()
                .is_none_or(|from| local.is_some_and(|l| from.zones.iter().any(|z| z == l)))
        });
        for (p, f) in (1u32..).zip(applicable) {
            let listed =
                f.to.zones
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|z| z == zone);
            match f.to.kind {
                ToZoneType::None => return None,
                ToZoneType::Any => return Some(p),
                ToZoneType::Only if listed => return Some(p),
                ToZoneType::AnyExcept if !listed => return Some(p),
                ToZoneType::Only | ToZoneType::AnyExcept => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use koguma_api::{FromZones, ToZones};

    fn to(kind: ToZoneType, zones: &[&str]) -> ToZones {
        ToZones {
            kind,
            zones: (!zones.is_empty()).then(|| zones.iter().map(|z| z.to_string()).collect()),
        }
    }

    #[test]
    fn failover_orders_zones_and_leaves_out_the_unlisted() {
        let off = Locality::default();
        assert_eq!(off.priority(Some("a"), "b"), Some(0));
        let on = Locality {
            aware: true,
            failover: Vec::new(),
        };
        assert_eq!(on.priority(Some("a"), "a"), Some(0));
        assert_eq!(on.priority(Some("a"), "b"), Some(1));
        let ordered = Locality {
            aware: true,
            failover: vec![
                // Only for callers in zone-x: never applies here.
                Failover {
                    from: Some(FromZones {
                        zones: vec!["x".into()],
                    }),
                    to: to(ToZoneType::Any, &[]),
                },
                Failover {
                    from: None,
                    to: to(ToZoneType::Only, &["c"]),
                },
                Failover {
                    from: Some(FromZones {
                        zones: vec!["a".into()],
                    }),
                    to: to(ToZoneType::AnyExcept, &["d"]),
                },
                Failover {
                    from: None,
                    to: to(ToZoneType::None, &[]),
                },
            ],
        };
        assert_eq!(ordered.priority(Some("a"), "c"), Some(1));
        assert_eq!(ordered.priority(Some("a"), "b"), Some(2));
        assert_eq!(ordered.priority(Some("a"), "d"), None);
    }
}
