//! One instance of a service fails under load: its app dies, its app
//! freezes, or its sidecar is killed with -9. The caller's sidecar retries
//! on another endpoint and takes the failing one out of rotation (the
//! out-of-the-box behaviour of Kuma's default MeshRetry and outlier
//! detection), so GETs keep succeeding.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use koguma_e2e::{WebToBackend, client};

/// What a bounded load loop saw: replies by body (or status / error), and
/// the slowest request.
struct Seen {
    replies: BTreeMap<String, usize>,
    slowest: Duration,
    over_5s: usize,
}

/// `workers` clients each send `per_worker` GETs, 10 ms apart.
fn load(url: String, workers: usize, per_worker: usize) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let http = client::Http1::default();
                let mut seen = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    let started = Instant::now();
                    let key = match http.get(&url).await {
                        Ok(r) if r.status == 200 => r.text(),
                        Ok(r) => format!("status {}", r.status),
                        Err(e) => format!("error {e}"),
                    };
                    seen.push((key, started.elapsed()));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                seen
            }));
        }
        let mut all = Seen {
            replies: BTreeMap::new(),
            slowest: Duration::ZERO,
            over_5s: 0,
        };
        for t in tasks {
            for (key, took) in t.await.expect("load worker") {
                *all.replies.entry(key).or_insert(0) += 1;
                all.slowest = all.slowest.max(took);
                all.over_5s += usize::from(took > Duration::from_secs(5));
            }
        }
        all
    })
}

fn failed(seen: &Seen) -> usize {
    seen.replies
        .iter()
        .filter(|(k, _)| !k.starts_with('b'))
        .map(|(_, n)| n)
        .sum()
}

/// `name` for the backend service, on web's sidecar.
async fn backend_metric(mesh: &WebToBackend, name: &str) -> f64 {
    mesh.web
        .metric(&format!("{name}{{envoy_cluster_name=\"backend\"}}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_dies_under_load_fails_no_get() {
    let mut mesh = WebToBackend::start(2).await;
    let running = load(mesh.url("/"), 4, 300);
    tokio::time::sleep(Duration::from_secs(1)).await;
    mesh.backends[1].app.kill();
    let seen = running.await.expect("load");
    let retries = backend_metric(&mesh, "envoy_cluster_upstream_rq_retry").await;
    let ejections = backend_metric(
        &mesh,
        "envoy_cluster_outlier_detection_ejections_enforced_total",
    )
    .await;
    println!(
        "app b2 killed under load: {:?}; retries {retries}, ejections {ejections}",
        seen.replies
    );
    assert_eq!(failed(&seen), 0, "{:?}", seen.replies);
    assert!(retries >= 1.0, "no request was retried");
    assert!(ejections >= 1.0, "the dead endpoint was never taken out");
    // Taken out: b2's sidecar sees (almost) no more requests. Without the
    // ejection every other request would still go there and be retried.
    assert!(
        retries < 40.0,
        "{retries} retries: the dead endpoint stayed in rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_app_does_not_hold_requests() {
    let mesh = WebToBackend::start(2).await;
    let running = load(mesh.url("/"), 6, 250);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frozen_at = Instant::now();
    mesh.backends[1].app.freeze();
    let seen = running.await.expect("load");
    let ejections = backend_metric(
        &mesh,
        "envoy_cluster_outlier_detection_ejections_enforced_total",
    )
    .await;
    println!(
        "app b2 frozen under load for {:?}: {:?}; slowest request {:?}, {} over 5 s, ejections {ejections}",
        frozen_at.elapsed(),
        seen.replies,
        seen.slowest,
        seen.over_5s
    );
    assert_eq!(failed(&seen), 0, "{:?}", seen.replies);
    assert!(ejections >= 1.0, "the frozen endpoint was never taken out");
    // Without stall detection the requests sent to b2 wait for the 15 s
    // request timeout (the client gives up at 10 s).
    assert_eq!(seen.over_5s, 0, "slowest {:?}", seen.slowest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_killed_under_load_fails_no_get_and_leaves_rotation_at_once() {
    let mut mesh = WebToBackend::start(2).await;
    let running = load(mesh.url("/"), 4, 300);
    tokio::time::sleep(Duration::from_secs(1)).await;
    mesh.backends[1].dp.kill();
    let killed = Instant::now();
    // The CP takes it out of web's endpoints on the stream's end, not
    // after the deregistration delay (10 s).
    mesh.web.wait_endpoints(&mesh.listener(), 1).await;
    let out_after = killed.elapsed();
    // Its Dataplane stays until the deregistration delay (3 s in tests).
    let (status, _) = mesh
        .cp
        .get_json("/meshes/default/dataplanes/backend-2")
        .await;
    assert_eq!(status, 200, "deregistered at once, not after the delay");
    let seen = running.await.expect("load");
    println!(
        "sidecar backend-2 killed (-9) under load: {:?}; out of web's endpoints after {out_after:?}",
        seen.replies
    );
    assert_eq!(failed(&seen), 0, "{:?}", seen.replies);
    // (The tests' deregistration delay is 3 s: well below it.)
    assert!(
        out_after < Duration::from_millis(1500),
        "endpoint removed after {out_after:?}"
    );
}
