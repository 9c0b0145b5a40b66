//! The sync loop between a global and a zone, in-process: what travels on
//! connect, after a change, and after a reconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use koguma_api::{Resource, ResourceType};
use koguma_proto::v1::{KdsMessage, kds_message::Msg};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::LocalState;
use super::insights::RemoteInsights;
use super::session::{Session, SyncStats};
use super::side::Side;
use crate::dp_server::status::StatusRegistry;
use crate::mesh_ca::MeshCas;
use crate::resources::Resources;
use crate::role::Role;
use crate::store::{Origin, SqliteStore};

async fn local(role: Role) -> Arc<LocalState> {
    let creates = role.zone_name().is_none();
    let store = SqliteStore::in_memory().expect("store");
    let resources = Arc::new(
        Resources::open(Box::new(store), role, "test")
            .await
            .expect("resources"),
    );
    Arc::new(LocalState {
        cas: Arc::new(MeshCas::new(resources.clone(), creates)),
        resources,
        status: Arc::new(StatusRegistry::default()),
        remote_insights: Arc::new(RemoteInsights::default()),
    })
}

fn permission(name: &str, action: &str) -> Resource {
    Resource::from_value(serde_json::json!({
        "type": "MeshTrafficPermission", "mesh": "default", "name": name,
        "spec": {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": action}}]}
    }))
    .expect("permission")
}

/// What the global sent over one connection: resources upserted, removed.
#[derive(Default)]
struct Sent {
    deltas: AtomicUsize,
    upserts: AtomicUsize,
    removals: AtomicUsize,
}

/// Connects `zone` to `global` until the returned handle is dropped (its
/// tasks aborted), counting what the global sends.
async fn connect(
    global: &Arc<LocalState>,
    zone: &Arc<LocalState>,
) -> (Arc<Sent>, Vec<tokio::task::JoinHandle<()>>) {
    let (g_tx, mut g_rx) = mpsc::channel::<KdsMessage>(16);
    let (relay_tx, relay_rx) = mpsc::channel::<KdsMessage>(16);
    let (z_tx, z_rx) = mpsc::channel::<KdsMessage>(16);
    let sent = Arc::new(Sent::default());
    let counted = sent.clone();
    let relay = tokio::spawn(async move {
        while let Some(m) = g_rx.recv().await {
            if let Some(Msg::Delta(d)) = &m.msg {
                counted.deltas.fetch_add(1, Ordering::SeqCst);
                counted.upserts.fetch_add(d.upserts.len(), Ordering::SeqCst);
                counted
                    .removals
                    .fetch_add(d.removals.len(), Ordering::SeqCst);
            }
            if relay_tx.send(m).await.is_err() {
                return;
            }
        }
    });
    let g_side = Side::Global("zone-1".into());
    let z_side = Side::Zone;
    let g_has = z_side.holds(&zone.resources.catalog(), zone).await;
    let z_has = g_side.holds(&global.resources.catalog(), global).await;
    let g = Session {
        side: g_side,
        local: global.clone(),
        stats: Arc::new(SyncStats::default()),
    };
    let z = Session {
        side: z_side,
        local: zone.clone(),
        stats: Arc::new(SyncStats::default()),
    };
    let g_task = tokio::spawn(async move {
        let _ = g.run(g_has, ReceiverStream::new(z_rx).map(Ok), g_tx).await;
    });
    let z_task = tokio::spawn(async move {
        let _ = z
            .run(z_has, ReceiverStream::new(relay_rx).map(Ok), z_tx)
            .await;
    });
    (sent, vec![relay, g_task, z_task])
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn action(l: &LocalState, name: &str) -> Option<String> {
    let c = l.resources.catalog();
    let r = c.get(ResourceType::MeshTrafficPermission, "default", name)?;
    let v = r.resource.to_value();
    v["spec"]["from"][0]["default"]["action"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn a_reconnect_sends_only_what_changed_meanwhile() {
    let global = local(Role::Global).await;
    let zone = local(Role::Zone("zone-1".into())).await;
    // More than one delta's worth: the first sync goes in several.
    let n = super::outgoing::MAX_DELTA + 200;
    for i in 0..n {
        global
            .resources
            .upsert(permission(&format!("p{i}"), "Allow"), Origin::Api)
            .await
            .unwrap();
    }
    let (sent, tasks) = connect(&global, &zone).await;
    until("the zone to hold every permission", || {
        let c = zone.resources.catalog();
        c.list(ResourceType::MeshTrafficPermission, Some("default"))
            .count()
            == n
    })
    .await;
    // The mesh, its token signing key, the zone-token and user-token
    // public keys and the permissions, each once.
    assert_eq!(sent.upserts.load(Ordering::SeqCst), n + 4);
    assert!(
        sent.deltas.load(Ordering::SeqCst) >= 2,
        "one delta held everything"
    );
    // The zone now checks the tokens of zone proxies the global issues.
    let ingress = vec!["ingress".to_string()];
    let token = crate::tokens::zone::issue(
        &global.resources,
        "zone-1",
        ingress,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    crate::tokens::zone::verify(&zone.resources, &token, "zone-1", "ingress")
        .await
        .unwrap();
    // And the user tokens it issues.
    let user =
        crate::tokens::user::issue(&global.resources, "jane", vec![], Duration::from_secs(60))
            .await
            .unwrap();
    crate::tokens::user::verify(&zone.resources, &user)
        .await
        .unwrap();
    global
        .resources
        .upsert(permission("p0", "Deny"), Origin::Api)
        .await
        .unwrap();
    until("the change to arrive", || {
        action(&zone, "p0").as_deref() == Some("Deny")
    })
    .await;
    assert_eq!(
        sent.upserts.load(Ordering::SeqCst),
        n + 5,
        "a change costs one resource"
    );
    tasks.iter().for_each(|t| t.abort());

    // Meanwhile: one change, one deletion. Back: exactly those travel.
    global
        .resources
        .upsert(permission("p1", "Deny"), Origin::Api)
        .await
        .unwrap();
    global
        .resources
        .delete(ResourceType::MeshTrafficPermission, "default", "p2")
        .await
        .unwrap();
    let (sent, tasks) = connect(&global, &zone).await;
    until("the zone to catch up", || {
        action(&zone, "p1").as_deref() == Some("Deny") && action(&zone, "p2").is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sent.upserts.load(Ordering::SeqCst), 1);
    assert_eq!(sent.removals.load(Ordering::SeqCst), 1);
    tasks.iter().for_each(|t| t.abort());
}

fn dataplane(mesh: &str, name: &str) -> Resource {
    Resource::from_value(serde_json::json!({
        "type": "Dataplane", "mesh": mesh, "name": name,
        "networking": {"address": "10.0.0.1", "inbound": [
            {"port": 8080, "servicePort": 18080, "tags": {"kuma.io/service": "backend"}}
        ]}
    }))
    .expect("dataplane")
}

fn mesh(name: &str) -> Resource {
    Resource::from_value(serde_json::json!({"type": "Mesh", "name": name})).expect("mesh")
}

fn zone_dataplanes_on(global: &LocalState, mesh: &str) -> Vec<String> {
    let c = global.resources.catalog();
    c.list(ResourceType::Dataplane, Some(mesh))
        .map(|r| {
            r.resource
                .meta
                .labels
                .get("kuma.io/display-name")
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_rejected_resource_is_retried_and_the_rest_stays_stored() {
    let global = local(Role::Global).await;
    let zone = local(Role::Zone("zone-1".into())).await;
    // A mesh the global does not have (made on the zone behind the API's
    // back): its dataplane is NACKed by the global, the other one stored.
    zone.resources
        .upsert(mesh("other"), Origin::Kds)
        .await
        .unwrap();
    zone.resources
        .upsert(dataplane("other", "dp-x"), Origin::Api)
        .await
        .unwrap();
    let (_, tasks) = connect(&global, &zone).await;
    let mut stored = false;
    for _ in 0..1000 {
        stored = zone.resources.catalog().mesh("default").is_some()
            && zone
                .resources
                .upsert(dataplane("default", "dp-ok"), Origin::Api)
                .await
                .is_ok();
        if stored {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stored, "default's dataplane stored on the zone");
    until("dp-ok on the global", || {
        zone_dataplanes_on(&global, "default") == ["dp-ok"]
    })
    .await;
    assert!(zone_dataplanes_on(&global, "other").is_empty());
    // Once the mesh exists on the global, the retry stores it.
    global
        .resources
        .upsert(mesh("other"), Origin::Api)
        .await
        .unwrap();
    until("dp-x on the global after the retry", || {
        zone_dataplanes_on(&global, "other") == ["dp-x"]
    })
    .await;
    let c = global.resources.catalog();
    let copy = c
        .list(ResourceType::Dataplane, Some("other"))
        .next()
        .unwrap();
    assert_eq!(copy.origin, Origin::Kds);
    assert_eq!(
        copy.resource
            .meta
            .labels
            .get("kuma.io/zone")
            .map(String::as_str),
        Some("zone-1")
    );
    tasks.iter().for_each(|t| t.abort());
}

#[tokio::test(start_paused = true)]
async fn a_rejected_removal_is_retried_until_it_can_be_done() {
    let global = local(Role::Global).await;
    let zone = local(Role::Zone("zone-1".into())).await;
    global
        .resources
        .upsert(mesh("other"), Origin::Api)
        .await
        .unwrap();
    let (_, tasks) = connect(&global, &zone).await;
    until("mesh other in the zone", || {
        zone.resources.catalog().mesh("other").is_some()
    })
    .await;
    zone.resources
        .upsert(dataplane("other", "dp-1"), Origin::Api)
        .await
        .unwrap();
    until("dp-1 on the global", || {
        zone_dataplanes_on(&global, "other") == ["dp-1"]
    })
    .await;
    // The zone cannot remove a mesh its dataplane still uses: NACKed...
    let c = global.resources.catalog();
    let copy = c
        .list(ResourceType::Dataplane, Some("other"))
        .next()
        .unwrap()
        .resource
        .meta
        .name
        .clone();
    drop(c);
    global
        .resources
        .delete(ResourceType::Dataplane, "other", &copy)
        .await
        .unwrap();
    global
        .resources
        .delete(ResourceType::Mesh, "", "other")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(zone.resources.catalog().mesh("other").is_some());
    // ...and retried: once the dataplane is gone, the mesh goes too.
    zone.resources
        .delete(ResourceType::Dataplane, "other", "dp-1")
        .await
        .unwrap();
    until("mesh other gone from the zone", || {
        zone.resources.catalog().mesh("other").is_none()
    })
    .await;
    tasks.iter().for_each(|t| t.abort());
}

fn zone_resource(name: &str, enabled: bool) -> Resource {
    Resource::from_value(serde_json::json!({"type": "Zone", "name": name, "enabled": enabled}))
        .expect("zone")
}

fn ingresses_of(l: &LocalState, zone: &str) -> usize {
    let c = l.resources.catalog();
    c.list(ResourceType::ZoneIngress, None)
        .filter(|r| {
            r.resource
                .meta
                .labels
                .get("kuma.io/zone")
                .map(String::as_str)
                == Some(zone)
        })
        .count()
}

#[tokio::test]
async fn a_zone_disabled_on_the_global_leaves_the_other_zones_view() {
    let global = local(Role::Global).await;
    let zone1 = local(Role::Zone("zone-1".into())).await;
    // zone-2's ingress, as the global holds it from zone-2's sync.
    let copy = Resource::from_value(serde_json::json!({
        "type": "ZoneIngress", "name": "ingress-x",
        "labels": {"kuma.io/origin": "zone", "kuma.io/zone": "zone-2", "kuma.io/display-name": "ingress"},
        "zone": "zone-2",
        "networking": {"address": "10.0.0.2", "port": 10001, "advertisedAddress": "192.0.2.2", "advertisedPort": 10001}
    }))
    .unwrap();
    global.resources.upsert(copy, Origin::Kds).await.unwrap();
    let (_, tasks) = connect(&global, &zone1).await;
    until("zone-2's ingress in zone-1", || {
        ingresses_of(&zone1, "zone-2") == 1
    })
    .await;
    global
        .resources
        .upsert(zone_resource("zone-2", false), Origin::Api)
        .await
        .unwrap();
    until("zone-2's ingress gone from zone-1", || {
        ingresses_of(&zone1, "zone-2") == 0
    })
    .await;
    global
        .resources
        .upsert(zone_resource("zone-2", true), Origin::Api)
        .await
        .unwrap();
    until("zone-2's ingress back in zone-1", || {
        ingresses_of(&zone1, "zone-2") == 1
    })
    .await;
    tasks.iter().for_each(|t| t.abort());
}
