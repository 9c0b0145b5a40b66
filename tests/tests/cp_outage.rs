//! The control plane goes away: traffic keeps flowing on the last config.
//! It comes back: agents reconnect, resync, and take new changes.

use std::time::Duration;

use koguma_e2e::{WebToBackend, client, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_survives_a_cp_outage_and_agents_resync() {
    let mut mesh = WebToBackend::start(1).await;
    let version_before = mesh.web.config_dump().await["version"]
        .as_str()
        .unwrap()
        .to_string();
    let http = client::Http1::default();

    mesh.cp.kill();
    eventually(
        "web to notice the CP is gone",
        Duration::from_secs(10),
        || async {
            (mesh.web.metric("envoy_control_plane_connected_state").await == 0.0).then_some(())
        },
    )
    .await;
    let counts = client::tally(&http, &mesh.url("/"), 50).await;
    assert_eq!(
        counts.get("b1"),
        Some(&50),
        "traffic failed while the CP was down: {counts:?}"
    );
    assert_eq!(
        mesh.web.ready_status().await,
        Some(200),
        "readiness must not depend on the CP once configured"
    );
    assert_eq!(
        mesh.web.config_dump().await["version"],
        version_before.as_str()
    );

    mesh.cp.restart().await;
    // The agent reconnects and acknowledges the same config, without
    // re-applying it.
    eventually(
        "web to be online again with its version acknowledged",
        Duration::from_secs(15),
        || async {
            let insight = mesh.cp.insight("web-1").await;
            (insight["online"] == true && insight["lastAckedVersion"] == version_before.as_str())
                .then_some(())
        },
    )
    .await;

    // And takes changes made after the restart.
    mesh.add_backend().await;
    mesh.web.wait_endpoints(&mesh.listener(), 2).await;
    let counts = client::tally(&http, &mesh.url("/"), 20).await;
    assert_eq!(
        (counts.get("b1"), counts.get("b2")),
        (Some(&10), Some(&10)),
        "{counts:?}"
    );
}
