//! Config changes under continuous load: endpoints added and removed,
//! listeners added and removed on the caller. Not one request is lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::{ControlPlane, Dataplane, TestNet, apps, client};

/// Bounds of the load: whichever comes first.
const MAX_REQUESTS: usize = 20_000;
const MAX_TIME: Duration = Duration::from_secs(30);
const WORKERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_updates_under_load_lose_no_request() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let (cp_ip, web_ip) = (net.host(0), net.host(1));
    let cp = ControlPlane::start(cp_ip, dir.path()).await;
    let web_yaml = DataplaneYaml::new("web-1", web_ip)
        .inbound(8080, 18080, "web", "http")
        .outbound(web_ip, 10001, "backend");
    let web = Dataplane::start(&cp, &web_yaml, dir.path());
    let mut apps_running = Vec::new();
    let mut backends = Vec::new();
    for i in 1..=3u8 {
        let ip = net.host(1 + i);
        apps_running.push(apps::http(SocketAddr::new(ip, 18081), &format!("b{i}")).await);
    }
    let backend = |i: u8| {
        DataplaneYaml::new(&format!("backend-{i}"), net.host(1 + i))
            .inbound(8081, 18081, "backend", "http")
    };
    backends.push(Dataplane::start(&cp, &backend(1), dir.path()));
    backends.push(Dataplane::start(&cp, &backend(2), dir.path()));
    web.wait_ready().await;
    let listener = format!("outbound:{web_ip}:10001");
    web.wait_endpoints(&listener, 2).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let url = format!("http://{web_ip}:10001/");
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (stop, sent, url) = (stop.clone(), sent.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let http = client::Http1::default();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < MAX_TIME
                && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
            {
                match http.get(&url).await {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failures.push(format!("{} {}", r.status, r.text())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    let pause = || tokio::time::sleep(Duration::from_millis(400));

    // 1. An endpoint joins.
    pause().await;
    backends.push(Dataplane::start(&cp, &backend(3), dir.path()));
    web.wait_endpoints(&listener, 3).await;
    // 2. The caller's config changes: a listener is added, then removed,
    //    while the one under load stays.
    pause().await;
    cp.apply(
        &web_yaml
            .clone()
            .outbound(web_ip, 10002, "backend")
            .to_yaml(),
    )
    .await;
    web.wait_endpoints(&format!("outbound:{web_ip}:10002"), 3)
        .await;
    pause().await;
    cp.apply(&web_yaml.to_yaml()).await;
    // 3. An endpoint leaves.
    pause().await;
    backends[0].sigterm();
    web.wait_endpoints(&listener, 2).await;
    pause().await;

    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    let total = sent.load(Ordering::Relaxed).min(MAX_REQUESTS);
    assert!(
        failures.is_empty(),
        "{} of about {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        total > 200,
        "too little load to prove anything: {total} requests"
    );
    assert!(
        apps_running[2].hits() > 0,
        "the endpoint that joined got no traffic"
    );
    eprintln!("{total} requests through 4 config changes, none failed");
}
