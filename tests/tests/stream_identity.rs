//! A dataplane's identity on the config stream: a second agent that dials
//! in as a dataplane whose agent is live (same name, valid token) takes
//! nothing from it. Its endpoints stay in rotation, and when the stray
//! stream ends, by SIGTERM or kill -9, the Dataplane is not deregistered.

use std::time::Duration;

use koguma_e2e::{Dataplane, WebToBackend, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_second_stream_neither_drains_nor_deregisters_the_live_dataplane() {
    let mesh = WebToBackend::start(1).await;
    let url = format!("http://{}:10001/", mesh.web_ip);
    let load = {
        let url = url.clone();
        tokio::spawn(async move {
            let http = client::Http1::default();
            let mut seen = std::collections::BTreeMap::new();
            for _ in 0..2000 {
                let key = match http.get(&url).await {
                    Ok(r) if r.status == 200 => r.text(),
                    Ok(r) => format!("status {}", r.status),
                    Err(e) => format!("error {e}"),
                };
                *seen.entry(key).or_insert(0usize) += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    let yaml = mesh.backend_yaml(1);
    // A stray agent as backend-1 (its listeners cannot even bind: the real
    // one holds them), ended by SIGTERM, which says `leaving`...
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stray = Dataplane::start(&mesh.cp, &yaml, mesh.dir.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let insight = mesh.cp.insight("backend-1").await;
    assert_eq!(insight["liveStreams"], 2, "{insight}");
    stray.sigterm();
    stray.wait_exit(Duration::from_secs(10)).await;
    // ...then another, killed without a word.
    let mut stray = Dataplane::start(&mesh.cp, &yaml, mesh.dir.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stray.kill();
    let seen = load.await.expect("load loop");
    println!("requests while stray streams came and went: {seen:?}");
    assert_eq!(seen.get("b1"), Some(&2000), "failed requests: {seen:?}");

    // Past the deregistration delay (10 s) after the last stray ended: the
    // live agent's Dataplane is still there and online.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (status, _) = mesh
        .cp
        .get_json("/meshes/default/dataplanes/backend-1")
        .await;
    assert_eq!(status, 200, "the live agent's Dataplane was deregistered");
    let insight = mesh.cp.insight("backend-1").await;
    assert_eq!(
        (insight["online"].clone(), insight["liveStreams"].clone()),
        (true.into(), 1.into()),
        "{insight}"
    );
    let counts = client::tally(&client::Http1::default(), &url, 20).await;
    assert_eq!(counts.get("b1"), Some(&20), "{counts:?}");
}
