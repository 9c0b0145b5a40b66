//! The incremental path (index updated from catalog diffs, streams woken
//! only when what they watch changed, views that rebuild only when what they
//! use changed) gives exactly the configs that computing everything from
//! scratch gives, over random catalogs and random sequences of changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use koguma_api::ResourceType;
use proptest::prelude::*;
use serde_json::json;

use super::test_catalog::{dataplane, give_vips, mesh, permission, stored, transparent};
use super::{ConfigIndex, ConfigSnapshot, DataplaneView, Refresh};
use crate::catalog::Catalog;

const SERVICES: [&str; 4] = ["web", "backend", "db", "cache"];
const PROTOCOLS: [&str; 3] = ["http", "tcp", "grpc"];

#[derive(Debug, Clone)]
enum Change {
    Dataplane {
        name: u8,
        service: usize,
        addr: u8,
        protocol: usize,
        ready: bool,
        outbound: Option<usize>,
        transparent: Option<Vec<usize>>,
    },
    DeleteDataplane(u8),
    Drain(u8, bool),
    Mtls(bool),
    Permission {
        name: u8,
        target: Option<usize>,
        from: Option<usize>,
        deny: bool,
    },
    DeletePermission(u8),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0..8u8, 0..4usize, 1..4u8, 0..3usize, any::<bool>(), proptest::option::of(0..4usize),
              proptest::option::of(proptest::collection::vec(0..4usize, 0..3)))
            .prop_map(|(name, service, addr, protocol, ready, outbound, transparent)| Change::Dataplane {
                name, service, addr, protocol, ready, outbound, transparent,
            }),
        1 => (0..8u8).prop_map(Change::DeleteDataplane),
        2 => (0..8u8, any::<bool>()).prop_map(|(n, d)| Change::Drain(n, d)),
        1 => any::<bool>().prop_map(Change::Mtls),
        2 => (0..3u8, proptest::option::of(0..6usize), proptest::option::of(0..6usize), any::<bool>())
            .prop_map(|(name, target, from, deny)| Change::Permission { name, target, from, deny }),
        1 => (0..3u8).prop_map(Change::DeletePermission),
    ]
}

fn dp_name(n: u8) -> String {
    format!("dp-{n}")
}

/// 0–3: a service; 4, 5: a version subset; anything else: the mesh.
fn selector(choice: Option<usize>) -> serde_json::Value {
    match choice {
        Some(s) if s < SERVICES.len() => json!({"kind": "MeshService", "name": SERVICES[s]}),
        Some(v @ 4..=5) => {
            json!({"kind": "MeshSubset", "tags": {"version": format!("v{}", v - 4)}})
        }
        _ => json!({"kind": "Mesh"}),
    }
}

fn apply(c: &mut Catalog, change: &Change) {
    match change {
        Change::Dataplane {
            name,
            service,
            addr,
            protocol,
            ready,
            outbound,
            transparent: tp,
        } => {
            let mut v = dataplane(
                &dp_name(*name),
                &format!("127.0.0.{addr}"),
                SERVICES[*service],
                PROTOCOLS[*protocol],
                outbound.map(|o| SERVICES[o]),
            );
            // Instances of one service differ in tags: dp-0, 2, 4, 6 are v0.
            v["networking"]["inbound"][0]["tags"]["version"] = json!(format!("v{}", name % 2));
            if !ready {
                v["networking"]["inbound"][0]["health"] = json!({"ready": false});
            }
            if let Some(listed) = tp {
                let listed: Vec<&str> = listed.iter().map(|s| SERVICES[*s]).collect();
                v = transparent(v, &listed);
            }
            c.insert(stored(v));
            give_vips(c);
        }
        Change::DeleteDataplane(n) => {
            c.resources
                .remove(&(ResourceType::Dataplane, "default".into(), dp_name(*n)));
            c.draining.remove(&("default".into(), dp_name(*n)));
        }
        Change::Drain(n, on) => {
            let key = ("default".to_string(), dp_name(*n));
            if c.get(ResourceType::Dataplane, "default", &key.1).is_some() {
                if *on {
                    c.draining.insert(key);
                } else {
                    c.draining.remove(&key);
                }
            }
        }
        Change::Mtls(on) => c.insert(mesh(*on)),
        Change::Permission {
            name,
            target,
            from,
            deny,
        } => {
            let action = if *deny { "Deny" } else { "Allow" };
            c.insert(permission(
                &format!("mtp-{name}"),
                selector(*target),
                json!([{"targetRef": selector(*from), "default": {"action": action}}]),
            ));
        }
        Change::DeletePermission(n) => {
            c.resources.remove(&(
                ResourceType::MeshTrafficPermission,
                "default".into(),
                format!("mtp-{n}"),
            ));
        }
    }
}

/// Each mesh's services, by value.
fn contents(index: &ConfigIndex) -> BTreeMap<String, Vec<(String, String)>> {
    index
        .meshes
        .iter()
        .map(|(m, ctx)| {
            let services = ctx
                .services
                .iter()
                .map(|(s, e)| (s.clone(), format!("{:?}", **e)))
                .collect();
            (m.clone(), services)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn incremental_configs_equal_full_computation(
        batches in proptest::collection::vec(proptest::collection::vec(change(), 1..4), 1..12),
    ) {
        let mut catalog = Catalog::default();
        catalog.insert(mesh(false));
        let mut snapshot = ConfigSnapshot::new(Arc::new(catalog.clone()));
        let mut views: BTreeMap<u8, DataplaneView> = BTreeMap::new();
        for batch in &batches {
            for change in batch {
                apply(&mut catalog, change);
            }
            snapshot = snapshot.next(Arc::new(catalog.clone()));
            let full = ConfigSnapshot::new(Arc::new(catalog.clone()));
            prop_assert_eq!(contents(&snapshot.index), contents(&full.index));
            for n in 0..8u8 {
                let name = dp_name(n);
                let view = views
                    .entry(n)
                    .or_insert_with(|| DataplaneView::new("default", &name, None));
                // A stream the changes do not touch would not be woken:
                // its config must indeed be the same. (A new stream builds
                // its first config whatever changed.)
                let woken = view.config().is_none() || snapshot.changes.touches(&view.watched());
                let outcome = view.refresh(&snapshot);
                if !woken {
                    prop_assert!(
                        matches!(outcome, Refresh::Unchanged),
                        "dataplane {} was not woken but its config changed: {:?}",
                        name,
                        snapshot.changes
                    );
                }
                let expected = full.compute("default", &name, None);
                match outcome {
                    Refresh::Deleted => {
                        prop_assert!(expected.is_none());
                        views.remove(&n);
                    }
                    Refresh::Unchanged | Refresh::Rebuilt => {
                        prop_assert_eq!(view.config(), expected.as_ref(), "dataplane {}", name);
                    }
                }
            }
        }
    }
}
