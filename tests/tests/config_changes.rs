//! A connected sidecar is sent a config only when something it uses
//! changed: resources it does not use leave its version, and the count of
//! responses its stream was sent, as they were.

use std::time::Duration;

use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::{WebToBackend, eventually};
use serde_json::Value;

fn sent(insight: &Value) -> (String, u64) {
    let version = insight["lastAckedVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let count = insight["subscriptions"][0]["status"]["total"]["responsesSent"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (version, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrelated_change_sends_nothing_and_a_related_one_does() {
    let mesh = WebToBackend::start(1).await;
    // Settled: web has ACKed what it was last sent.
    let before = eventually(
        "web to ACK its latest config",
        Duration::from_secs(10),
        || async {
            let i = mesh.cp.insight("web-1").await;
            (i["lastAckedVersion"] == i["lastSentVersion"]).then(|| sent(&i))
        },
    )
    .await;

    // A service web does not call, with two instances, and a permission
    // for it: nothing of it is web's business.
    for i in 1..=2 {
        let other = DataplaneYaml::new(&format!("other-{i}"), mesh.net.host(10 + i))
            .inbound(8082, 18082, "other", "http");
        mesh.cp.apply(&other.to_yaml()).await;
    }
    mesh.cp
        .apply(
            "type: MeshTrafficPermission\nmesh: default\nname: to-other\nspec:\n  targetRef: {kind: MeshService, name: other}\n  from:\n  - targetRef: {kind: Mesh}\n    default: {action: Allow}\n",
        )
        .await;
    let (status, _) = mesh.cp.get_json("/meshes/default/dataplanes/other-2").await;
    assert_eq!(status, 200);
    // Several batching windows.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = sent(&mesh.cp.insight("web-1").await);
    assert_eq!(
        after, before,
        "web was sent a config for changes it does not use"
    );

    // A second backend instance is web's business: a new version arrives.
    let backend = mesh.backend_yaml(2);
    mesh.cp.apply(&backend.to_yaml()).await;
    let changed = eventually(
        "web to get the new backend",
        Duration::from_secs(5),
        || async {
            let now = sent(&mesh.cp.insight("web-1").await);
            (now.0 != before.0 && now.1 > before.1).then_some(now)
        },
    )
    .await;
    assert_eq!(changed.1, before.1 + 1, "one change, one response");
    // It came as a delta (the new backend's cluster), and web rebuilt the
    // very config the CP computed: no NACK, both endpoints in force.
    mesh.web.wait_endpoints(&mesh.listener(), 2).await;
    let insight = mesh.cp.insight("web-1").await;
    assert_eq!(
        insight["lastAckedVersion"].as_str(),
        Some(changed.0.as_str())
    );
    assert_eq!(
        insight["subscriptions"][0]["status"]["total"]["responsesRejected"], "0",
        "{insight}"
    );
    // Registered from its template, web's first stream was served, not
    // refused while the new Dataplane waited for its first snapshot.
    assert!(
        !mesh.web.log().contains("refused"),
        "web's stream was refused:\n{}",
        mesh.web.log()
    );
    assert!(
        mesh.web.log().contains("delta=true"),
        "web applied no delta:\n{}",
        mesh.web.log()
    );
}
