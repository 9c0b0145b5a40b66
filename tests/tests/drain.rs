//! SIGTERM: readiness fails at once, in-flight requests finish, the process
//! exits 0.

use std::net::SocketAddr;
use std::time::Duration;

use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::{ControlPlane, Dataplane, TestNet, apps, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_on_both_sides() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let (cp_ip, web_ip, backend_ip) = (net.host(0), net.host(1), net.host(2));
    let cp = ControlPlane::start(cp_ip, dir.path()).await;
    let _app = apps::http(SocketAddr::new(backend_ip, 18081), "b1").await;
    let mut backend = Dataplane::start(
        &cp,
        &DataplaneYaml::new("backend-1", backend_ip).inbound(8081, 18081, "backend", "http"),
        dir.path(),
    );
    let mut web = Dataplane::start(
        &cp,
        &DataplaneYaml::new("web-1", web_ip)
            .inbound(8080, 18080, "web", "http")
            .outbound(web_ip, 10001, "backend"),
        dir.path(),
    );
    backend.wait_ready().await;
    web.wait_ready().await;
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 1)
        .await;
    let slow = format!("http://{web_ip}:10001/slow?ms=2500");

    // The backend's sidecar is told to stop while a request is in it.
    let in_flight = tokio::spawn({
        let slow = slow.clone();
        async move { client::get(&slow).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    backend.sigterm();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        backend.ready_status().await,
        Some(503),
        "readiness must fail as soon as draining starts"
    );
    let r = in_flight
        .await
        .unwrap()
        .expect("the in-flight request must complete");
    assert_eq!((r.status, r.text().as_str()), (200, "b1"));
    let status = backend
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("backend's agent should exit after draining");
    assert!(status.success(), "{status}");
    assert!(
        backend.log().contains("drained: all connections finished"),
        "{}",
        backend.log()
    );

    // Same for the caller's sidecar, with a new backend behind it.
    let ip2 = net.host(3);
    let _app2 = apps::http(SocketAddr::new(ip2, 18081), "b2").await;
    let _b2 = Dataplane::start(
        &cp,
        &DataplaneYaml::new("backend-2", ip2).inbound(8081, 18081, "backend", "http"),
        dir.path(),
    );
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 1)
        .await;
    let in_flight = tokio::spawn(async move { client::get(&slow).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    web.sigterm();
    let r = in_flight
        .await
        .unwrap()
        .expect("the in-flight request must complete");
    assert_eq!((r.status, r.text().as_str()), (200, "b2"));
    let status = web
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("web's agent should exit after draining");
    assert!(status.success(), "{status}");
}
