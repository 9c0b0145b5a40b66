//! MeshRateLimit as a user sees it: an inbound's HTTP request rate and TCP
//! connection rate, enforced by the backend's sidecar with Envoy's token
//! bucket (`num` tokens refilled every `interval`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use koguma_e2e::{WebToBackend, apps, client, eventually};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_requests_a_second_then_429_until_the_next_second() {
    let mesh = WebToBackend::start(1).await;
    let backend = &mesh.backends[0].dp;
    mesh.apply_and_see(
        backend,
        "type: MeshRateLimit\nmesh: default\nname: ten-a-second\nspec:\n  targetRef: {kind: MeshService, name: backend}\n  from:\n  - targetRef: {kind: Mesh}\n    default:\n      local:\n        http:\n          requestRate: {num: 10, interval: 1s}\n          onRateLimit:\n            status: 429\n            headers:\n              set:\n              - {name: x-kuma-rate-limited, value: \"true\"}\n",
        "\"num\":10",
    )
    .await;
    // A burst of 30 (a few tens of milliseconds).
    let http = client::Http1::default();
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    let mut limited_header = None;
    for _ in 0..30 {
        let r = http.get(&mesh.url("/")).await.expect("request");
        if r.status == 429 {
            limited_header = r.headers.get("x-kuma-rate-limited").cloned();
        }
        *counts.entry(r.status).or_default() += 1;
    }
    println!("a burst of 30 under 10 per second: {counts:?}");
    // Ten per interval; twenty when the burst straddles two.
    let ok = counts.get(&200).copied().unwrap_or(0);
    assert!(ok == 10 || ok == 20, "{counts:?}");
    assert_eq!(
        ok + counts.get(&429).copied().unwrap_or(0),
        30,
        "{counts:?}"
    );
    assert_eq!(
        limited_header.as_ref().map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let limited = backend
        .metric_sum("envoy_http_local_rate_limit_rate_limited")
        .await;
    assert_eq!(limited, (30 - ok) as f64);
    let (enabled, enforced) = (
        backend
            .metric_sum("envoy_http_local_rate_limit_enabled")
            .await,
        backend
            .metric_sum("envoy_http_local_rate_limit_enforced")
            .await,
    );
    assert_eq!((enabled, enforced), (30.0, limited));
    // The next interval lets traffic through again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = http.get(&mesh.url("/")).await.expect("after the interval");
    assert_eq!((r.status, r.text()), (200, "b1".to_string()));
}

/// Opens a connection through `addr` and says whether it echoes.
async fn echoes(addr: SocketAddr) -> bool {
    match TcpStream::connect(addr).await {
        Ok(mut conn) => apps::echoes(&mut conn).await,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_rate_closes_the_connections_beyond_it() {
    let mesh = WebToBackend::start(1).await;
    let echo = mesh.add_echo().await;
    let addr = echo.addr;
    eventually("echo through web", Duration::from_secs(10), || async {
        echoes(addr).await.then_some(())
    })
    .await;
    mesh.apply_and_see(
        &echo.dp,
        "type: MeshRateLimit\nmesh: default\nname: five-connections\nspec:\n  targetRef: {kind: MeshService, name: echo}\n  from:\n  - targetRef: {kind: Mesh}\n    default:\n      local:\n        tcp:\n          connectionRate: {num: 5, interval: 3s}\n",
        "\"tcpRateLimit\":{",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let mut echoed = 0;
    for _ in 0..12 {
        if echoes(addr).await {
            echoed += 1;
        }
    }
    let closed = echo
        .dp
        .metric_sum("envoy_local_ratelimit_rate_limited")
        .await;
    println!("12 connections under 5 per 3 s: {echoed} echoed, {closed} closed by the limit");
    assert!(echoed == 5 || echoed == 10, "{echoed} echoed");
    assert_eq!(closed, (12 - echoed) as f64);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(
        echoes(addr).await,
        "the next interval lets a connection through"
    );
}
