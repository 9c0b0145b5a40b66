//! What protects the control plane's ports: the DP server closes
//! connections that do not finish their TLS handshake in 10 s, so
//! half-open clients cannot hold its descriptors.

use std::time::{Duration, Instant};

use koguma_e2e::{WebToBackend, client};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_tls_connections_to_the_dp_server_are_closed_after_10s() {
    let mesh = WebToBackend::start(1).await;
    let dp_addr = mesh.cp.dp_url().trim_start_matches("https://").to_string();
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(&dp_addr).await.expect("connect"));
    }
    // Meanwhile the mesh keeps working, and a new agent can connect.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = client::tally(&client::Http1::default(), &mesh.url("/"), 10).await;
    assert_eq!(counts.get("b1"), Some(&10), "{counts:?}");

    let mut closed_after = Vec::new();
    for conn in &mut silent {
        let mut buf = [0u8; 1];
        let left = Duration::from_secs(15).saturating_sub(opened.elapsed());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => closed_after.push(opened.elapsed()),
            Ok(Ok(_)) => panic!("the DP server sent bytes to a client that said nothing"),
            Err(_) => break,
        }
    }
    let last = closed_after.iter().max().copied().unwrap_or_default();
    println!(
        "{} of 200 silent connections closed by the DP server; the last after {last:?}",
        closed_after.len()
    );
    assert_eq!(closed_after.len(), 200, "connections still open after 15 s");
    assert!(
        closed_after.iter().all(|t| *t >= Duration::from_secs(9)),
        "closed before the handshake timeout"
    );
}
