//! MeshFaultInjection as a user sees it: aborts, delays and a bandwidth
//! limit made up by real sidecars between web and backend, per caller.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::{Dataplane, WebToBackend, client, eventually, mtls};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifty_percent_abort_answers_about_half_of_400_requests_with_503() {
    let mesh = WebToBackend::start(1).await;
    // On web's outbound (`to`): the abort is web's own answer, which no
    // retry of web's sees.
    mesh.apply_and_see(
        &mesh.web,
        "type: MeshFaultInjection\nmesh: default\nname: half-503\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      http:\n      - abort: {httpStatus: 503, percentage: 50}\n",
        "\"abortStatus\":503",
    )
    .await;
    let counts = client::tally(&client::Http1::default(), &mesh.url("/"), 400).await;
    let aborted = counts.get("status 503").copied().unwrap_or(0);
    println!("400 requests under a 50 % abort: {counts:?}");
    assert_eq!(
        aborted + counts.get("b1").copied().unwrap_or(0),
        400,
        "{counts:?}"
    );
    // Binomial(400, 0.5): 200 ± 10; 160..=240 is four deviations.
    assert!((160..=240).contains(&aborted), "{counts:?}");
    let injected = mesh
        .web
        .metric_sum("envoy_http_fault_aborts_injected")
        .await;
    assert_eq!(injected, aborted as f64);
    let r = client::get(&mesh.url("/")).await.expect("request");
    if r.status == 503 {
        assert_eq!(r.text(), "fault filter abort\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_gets_its_own_abort_402_for_web_421_for_other() {
    let mesh = WebToBackend::start(1).await;
    // A second caller, `other`, with its own outbound to backend.
    let other_ip = mesh.net.host(9);
    let other = Dataplane::start(
        &mesh.cp,
        &DataplaneYaml::new("other-1", other_ip)
            .inbound(8080, 18080, "other", "http")
            .outbound(other_ip, 10001, "backend"),
        mesh.dir.path(),
    );
    other.wait_ready().await;
    // Callers are told apart by their mTLS identity.
    mtls::enable(&mesh.cp, "STRICT", "24h").await;
    mtls::forbid_nothing(&mesh.cp).await;
    let backend = &mesh.backends[0].dp;
    mesh.apply_and_see(
        backend,
        "type: MeshFaultInjection\nmesh: default\nname: per-caller\nspec:\n  targetRef: {kind: MeshService, name: backend}\n  from:\n  - targetRef: {kind: MeshService, name: web}\n    default:\n      http:\n      - abort: {httpStatus: 402, percentage: 100}\n  - targetRef: {kind: MeshService, name: other}\n    default:\n      http:\n      - abort: {httpStatus: 421, percentage: 100}\n",
        "\"abortStatus\":421",
    )
    .await;
    let other_url = format!("http://{}/", SocketAddr::new(other_ip, 10001));
    let statuses = |url: String| async move {
        eventually(
            &format!("{url} through mTLS"),
            Duration::from_secs(15),
            || {
                let url = url.clone();
                async move {
                    let r = client::get(&url).await.ok()?;
                    (r.status != 403 && r.status != 503).then_some(r.status)
                }
            },
        )
        .await
    };
    let from_web = statuses(mesh.url("/")).await;
    let from_other = statuses(other_url.clone()).await;
    println!("backend answers web with {from_web}, other with {from_other}");
    assert_eq!((from_web, from_other), (402, 421));
    let web = client::tally(&client::Http1::default(), &mesh.url("/"), 20).await;
    let oth = client::tally(&client::Http1::default(), &other_url, 20).await;
    assert_eq!(web, BTreeMap::from([("status 402".to_string(), 20)]));
    assert_eq!(oth, BTreeMap::from([("status 421".to_string(), 20)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_second_delay_under_a_one_second_timeout_is_a_504() {
    let mesh = WebToBackend::start(1).await;
    let backend = &mesh.backends[0].dp;
    mesh.apply_and_see(
        backend,
        "type: MeshFaultInjection\nmesh: default\nname: slow-backend\nspec:\n  targetRef: {kind: MeshService, name: backend}\n  from:\n  - targetRef: {kind: Mesh}\n    default:\n      http:\n      - delay: {value: 2s, percentage: 100}\n",
        "\"delayMs\":2000",
    )
    .await;
    // Delayed, the request still succeeds under Kuma's 15 s default.
    let started = Instant::now();
    let r = client::get(&mesh.url("/")).await.expect("delayed request");
    let delayed = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(delayed >= Duration::from_secs(2), "{delayed:?}");
    mesh.apply_and_see(
        &mesh.web,
        "type: MeshTimeout\nmesh: default\nname: one-second\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    default:\n      http: {requestTimeout: 1s}\n",
        "\"requestMs\":1000",
    )
    .await;
    let started = Instant::now();
    let r = client::get(&mesh.url("/")).await.expect("request");
    let took = started.elapsed();
    println!(
        "2 s delay: 200 after {delayed:?}; with a 1 s MeshTimeout: {} after {took:?}",
        r.status
    );
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(took < Duration::from_millis(1900), "{took:?}");
    assert!(backend.metric_sum("envoy_http_fault_delays_injected").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_bandwidth_limit_stretches_a_one_megabyte_response() {
    let mesh = WebToBackend::start(1).await;
    let url = mesh.url("/bytes?n=1000000");
    let http = client::Http1::default();
    let started = Instant::now();
    let r = http.get(&url).await.expect("1 MB");
    let unlimited = started.elapsed();
    assert_eq!(r.body.len(), 1_000_000);
    let backend = &mesh.backends[0].dp;
    // 2000 kbps as Kuma hands it to Envoy: 2000 KiB/s.
    mesh.apply_and_see(
        backend,
        "type: MeshFaultInjection\nmesh: default\nname: narrow\nspec:\n  targetRef: {kind: MeshService, name: backend}\n  from:\n  - targetRef: {kind: Mesh}\n    default:\n      http:\n      - responseBandwidth: {limit: 2000kbps, percentage: 100}\n",
        "\"bandwidthKbps\":2000",
    )
    .await;
    let started = Instant::now();
    let r = http.get(&url).await.expect("1 MB, limited");
    let limited = started.elapsed();
    assert_eq!(r.body.len(), 1_000_000);
    let rate = 1_000_000.0 / limited.as_secs_f64() / 1024.0;
    println!(
        "1 MB response: {unlimited:?} unlimited, {limited:?} at 2000 KiB/s ({rate:.0} KiB/s measured)"
    );
    // 1,000,000 B at 2,048,000 B/s: 488 ms.
    assert!(
        limited >= Duration::from_millis(440) && limited < Duration::from_millis(1500),
        "{limited:?}"
    );
    assert!(
        backend
            .metric_sum("envoy_http_fault_response_rl_injected")
            .await
            >= 1.0
    );
}
