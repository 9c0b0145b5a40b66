//! SIGTERM: readiness fails at once, in-flight requests finish, the process
//! exits 0.

use std::time::Duration;

use koguma_e2e::{WebToBackend, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_on_both_sides() {
    let mut mesh = WebToBackend::start(1).await;
    let slow = mesh.url("/slow?ms=2500");

    // The backend's sidecar is told to stop while a request is in it.
    let in_flight = tokio::spawn(client_get(slow.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backend = &mut mesh.backends[0].dp;
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
    mesh.add_backend().await;
    mesh.web.wait_endpoints(&mesh.listener(), 1).await;
    let in_flight = tokio::spawn(client_get(slow));
    tokio::time::sleep(Duration::from_millis(300)).await;
    mesh.web.sigterm();
    let r = in_flight
        .await
        .unwrap()
        .expect("the in-flight request must complete");
    assert_eq!((r.status, r.text().as_str()), (200, "b2"));
    let status = mesh
        .web
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("web's agent should exit after draining");
    assert!(status.success(), "{status}");
}

async fn client_get(url: String) -> Result<client::Reply, client::Error> {
    client::get(&url).await
}
