//! Endpoints come and go while callers keep their connections: traffic
//! spreads over new instances at once and leaves a removed one within a
//! second, without restarting anything.

use std::net::SocketAddr;
use std::time::Duration;

use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::{ControlPlane, Dataplane, TestNet, apps, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_one_to_three_instances_and_back_to_two() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let (cp_ip, web_ip) = (net.host(0), net.host(1));
    let cp = ControlPlane::start(cp_ip, dir.path()).await;
    let web = Dataplane::start(
        &cp,
        &DataplaneYaml::new("web-1", web_ip)
            .inbound(8080, 18080, "web", "http")
            .outbound(web_ip, 10001, "backend"),
        dir.path(),
    );
    let listener = format!("outbound:{web_ip}:10001");
    let url = format!("http://{web_ip}:10001/");

    let mut apps_running = Vec::new();
    let mut backends = Vec::new();
    for i in 1..=3u8 {
        let ip = net.host(1 + i);
        apps_running.push(apps::http(SocketAddr::new(ip, 18081), &format!("b{i}")).await);
        let dp =
            DataplaneYaml::new(&format!("backend-{i}"), ip).inbound(8081, 18081, "backend", "http");
        backends.push(Dataplane::start(&cp, &dp, dir.path()));
        if i == 1 {
            web.wait_ready().await;
            web.wait_endpoints(&listener, 1).await;
        }
    }
    // One keep-alive client, as an application holds one.
    let http = client::Http1::default();

    // Only b1 is known for certain at first; b2 and b3 join on their own.
    web.wait_endpoints(&listener, 3).await;
    let counts = client::tally(&http, &url, 60).await;
    for id in ["b1", "b2", "b3"] {
        assert!(
            counts.get(id).copied().unwrap_or(0) >= 15,
            "traffic not spread over all three: {counts:?}"
        );
    }
    assert_eq!(
        counts.values().sum::<usize>(),
        counts["b1"] + counts["b2"] + counts["b3"],
        "failures: {counts:?}"
    );

    // b2 leaves. A second later it gets nothing more.
    backends[1].sigterm();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b2_hits = apps_running[1].hits();
    let counts = client::tally(&http, &url, 60).await;
    assert_eq!(
        apps_running[1].hits(),
        b2_hits,
        "b2 still got traffic a second after leaving: {counts:?}"
    );
    assert_eq!(
        counts.get("b1").copied().unwrap_or(0) + counts.get("b3").copied().unwrap_or(0),
        60,
        "{counts:?}"
    );
    assert!(
        backends[1]
            .wait_exit(Duration::from_secs(10))
            .await
            .is_some_and(|s| s.success())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instance_costs_no_request() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let (cp_ip, web_ip) = (net.host(0), net.host(1));
    let cp = ControlPlane::start(cp_ip, dir.path()).await;
    let web = Dataplane::start(
        &cp,
        &DataplaneYaml::new("web-1", web_ip)
            .inbound(8080, 18080, "web", "http")
            .outbound(web_ip, 10001, "backend"),
        dir.path(),
    );
    let (ip1, ip2) = (net.host(2), net.host(3));
    let _a1 = apps::http(SocketAddr::new(ip1, 18081), "b1").await;
    let _a2 = apps::http(SocketAddr::new(ip2, 18081), "b2").await;
    let mut b1 = Dataplane::start(
        &cp,
        &DataplaneYaml::new("backend-1", ip1).inbound(8081, 18081, "backend", "http"),
        dir.path(),
    );
    let _b2 = Dataplane::start(
        &cp,
        &DataplaneYaml::new("backend-2", ip2).inbound(8081, 18081, "backend", "http"),
        dir.path(),
    );
    web.wait_ready().await;
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 2)
        .await;

    // SIGKILL: no goodbye, the CP still lists it as an endpoint for a while.
    b1.kill();
    let http = client::Http1::default();
    let counts = client::tally(&http, &format!("http://{web_ip}:10001/"), 40).await;
    assert_eq!(
        counts.get("b2"),
        Some(&40),
        "requests failed while an endpoint was dead: {counts:?}"
    );
}
