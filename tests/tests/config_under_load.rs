//! Config changes under continuous load: endpoints added and removed,
//! listeners added and removed on the caller. Not one request is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use koguma_e2e::{WebToBackend, client};

/// Bounds of the load: whichever comes first.
const MAX_REQUESTS: usize = 20_000;
const MAX_TIME: Duration = Duration::from_secs(30);
const WORKERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_updates_under_load_lose_no_request() {
    let mut mesh = WebToBackend::start(2).await;
    let listener = mesh.listener();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (stop, sent, url) = (stop.clone(), sent.clone(), mesh.url("/"));
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
    mesh.add_backend().await;
    mesh.web.wait_endpoints(&listener, 3).await;
    // 2. The caller's config changes: a listener is added, then removed,
    //    while the one under load stays.
    pause().await;
    let extra = mesh.web_yaml().outbound(mesh.web_ip, 10002, "backend");
    mesh.cp.apply(&extra.to_yaml()).await;
    mesh.web
        .wait_endpoints(&format!("outbound:{}:10002", mesh.web_ip), 3)
        .await;
    pause().await;
    mesh.cp.apply(&mesh.web_yaml().to_yaml()).await;
    // 3. An endpoint leaves.
    pause().await;
    mesh.backends[0].dp.sigterm();
    mesh.web.wait_endpoints(&listener, 2).await;
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
        mesh.backends[2].app.hits() > 0,
        "the endpoint that joined got no traffic"
    );
    eprintln!("{total} requests through 4 config changes, none failed");
}
