//! Endpoints come and go while callers keep their connections: traffic
//! spreads over new instances at once and leaves a removed one within a
//! second, without restarting anything.

use std::time::Duration;

use koguma_e2e::{WebToBackend, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_one_to_three_instances_and_back_to_two() {
    let mut mesh = WebToBackend::start(1).await;
    // One keep-alive client, as an application holds one.
    let http = client::Http1::default();
    let counts = client::tally(&http, &mesh.url("/"), 10).await;
    assert_eq!(counts.get("b1"), Some(&10), "{counts:?}");

    mesh.add_backend().await;
    mesh.add_backend().await;
    mesh.web.wait_endpoints(&mesh.listener(), 3).await;
    let counts = client::tally(&http, &mesh.url("/"), 60).await;
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
    mesh.backends[1].dp.sigterm();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b2_hits = mesh.backends[1].app.hits();
    let counts = client::tally(&http, &mesh.url("/"), 60).await;
    assert_eq!(
        mesh.backends[1].app.hits(),
        b2_hits,
        "b2 still got traffic a second after leaving: {counts:?}"
    );
    assert_eq!(
        counts.get("b1").copied().unwrap_or(0) + counts.get("b3").copied().unwrap_or(0),
        60,
        "{counts:?}"
    );
    let exit = mesh.backends[1].dp.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instance_costs_no_request() {
    let mut mesh = WebToBackend::start(2).await;
    // SIGKILL: no goodbye; the CP still lists it as an endpoint for a while.
    mesh.backends[0].dp.kill();
    let http = client::Http1::default();
    let counts = client::tally(&http, &mesh.url("/"), 40).await;
    assert_eq!(
        counts.get("b2"),
        Some(&40),
        "requests failed while an endpoint was dead: {counts:?}"
    );
}
