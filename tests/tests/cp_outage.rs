//! The control plane goes away: traffic keeps flowing on the last config.
//! It comes back: agents reconnect, resync, and take new changes.

use std::net::SocketAddr;
use std::time::Duration;

use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::{ControlPlane, Dataplane, TestNet, apps, client, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_survives_a_cp_outage_and_agents_resync() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let (cp_ip, web_ip, ip1, ip2) = (net.host(0), net.host(1), net.host(2), net.host(3));
    let mut cp = ControlPlane::start(cp_ip, dir.path()).await;
    let web = Dataplane::start(
        &cp,
        &DataplaneYaml::new("web-1", web_ip)
            .inbound(8080, 18080, "web", "http")
            .outbound(web_ip, 10001, "backend"),
        dir.path(),
    );
    let _a1 = apps::http(SocketAddr::new(ip1, 18081), "b1").await;
    let _b1 = Dataplane::start(
        &cp,
        &DataplaneYaml::new("backend-1", ip1).inbound(8081, 18081, "backend", "http"),
        dir.path(),
    );
    web.wait_ready().await;
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 1)
        .await;
    let version_before = web.config_dump().await["version"].clone();
    let url = format!("http://{web_ip}:10001/");
    let http = client::Http1::default();

    cp.kill();
    eventually(
        "web to notice the CP is gone",
        Duration::from_secs(10),
        || async { (web.metric("envoy_control_plane_connected_state").await == 0.0).then_some(()) },
    )
    .await;
    let counts = client::tally(&http, &url, 50).await;
    assert_eq!(
        counts.get("b1"),
        Some(&50),
        "traffic failed while the CP was down: {counts:?}"
    );
    assert_eq!(
        web.ready_status().await,
        Some(200),
        "readiness must not depend on the CP once configured"
    );
    assert_eq!(web.config_dump().await["version"], version_before);

    cp.restart().await;
    // The agent reconnects and acknowledges the same config, without
    // re-applying it.
    let version = version_before.as_str().unwrap().to_string();
    eventually(
        "web to be online again with its version acknowledged",
        Duration::from_secs(15),
        || async {
            let insight = cp.insight("web-1").await;
            (insight["online"] == true && insight["lastAckedVersion"] == version.as_str())
                .then_some(())
        },
    )
    .await;

    // And takes changes made after the restart.
    let _a2 = apps::http(SocketAddr::new(ip2, 18081), "b2").await;
    let _b2 = Dataplane::start(
        &cp,
        &DataplaneYaml::new("backend-2", ip2).inbound(8081, 18081, "backend", "http"),
        dir.path(),
    );
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 2)
        .await;
    let counts = client::tally(&http, &url, 20).await;
    assert_eq!(
        (counts.get("b1"), counts.get("b2")),
        (Some(&10), Some(&10)),
        "{counts:?}"
    );
}
