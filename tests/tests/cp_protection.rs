//! What protects the control plane's ports: the DP server closes
//! connections that do not finish their TLS handshake in 10 s, so
//! half-open clients cannot hold its descriptors; the REST API lets
//! anyone read, users with a token change resources, and admins issue
//! credentials, and it answers only to its own names.

use std::time::{Duration, Instant};

use koguma_e2e::{ControlPlane, TestNet, WebToBackend, client};
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

const MESH: &str = "type: Mesh\nname: payments\n";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Local callers are treated as anyone else here
/// (`--api-localhost-is-admin=false`): what a caller on another host meets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_writes_need_a_user_token_and_credentials_an_admin() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::spawn_with(
        net.host(0),
        dir.path(),
        &["--api-localhost-is-admin=false".to_string()],
    );
    cp.wait_ready().await;
    let d = dir.path();

    // Anonymous: reads yes, writes and credentials no, and nothing changes.
    assert_eq!(cp.get_json("/meshes").await.0, 200);
    let out = cp.cli(&["apply", "-f", "-"], Some(MESH)).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs a user token"),
        "{}",
        stderr(&out)
    );
    assert_eq!(cp.get_json("/meshes/payments").await.0, 404);
    let out = cp
        .cli(&["generate", "dataplane-token", "--name", "web-1"], None)
        .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs an admin"), "{}", stderr(&out));

    // The admin token the CP keeps in its data dir (0600) issues a user's.
    let admin = cp.data_dir.join("admin-user-token");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&admin).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "admin-user-token");
    }
    let admin_flag = admin.to_str().unwrap();
    let out = cp
        .cli(
            &[
                "generate",
                "user-token",
                "--name",
                "jane",
                "--api-token-file",
                admin_flag,
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let jane = d.join("jane.token");
    std::fs::write(&jane, &out.stdout).unwrap();
    let jane_flag = jane.to_str().unwrap();

    // A user changes resources, but issues no credentials.
    let out = cp
        .cli(
            &["apply", "-f", "-", "--api-token-file", jane_flag],
            Some(MESH),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cp.get_json("/meshes/payments").await.0, 200);
    let out = cp
        .cli(
            &[
                "generate",
                "dataplane-token",
                "--name",
                "web-1",
                "--api-token-file",
                jane_flag,
            ],
            None,
        )
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not in group mesh-system:admin"),
        "{}",
        stderr(&out)
    );

    // A token this CP did not sign is refused, naming why.
    let forged = d.join("forged.token");
    std::fs::write(&forged, "eyJhbGciOiJub25lIn0.eyJOYW1lIjoiYWRtaW4ifQ.").unwrap();
    let out = cp
        .cli(
            &[
                "delete",
                "mesh",
                "payments",
                "--api-token-file",
                forged.to_str().unwrap(),
            ],
            None,
        )
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("user token is not valid"),
        "{}",
        stderr(&out)
    );
    assert_eq!(cp.get_json("/meshes/payments").await.0, 200);
    assert!(
        cp.log().contains("API request refused"),
        "refusals are not logged"
    );
}

/// A browser page whose own name resolves to the API's address (DNS
/// rebinding) sends its own name as Host: refused, even for a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_for_another_host_name_are_refused() {
    use tokio::io::AsyncWriteExt;
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(net.host(0), dir.path()).await;
    let raw = |host: &'static str| {
        let addr = format!("{}:5681", cp.ip);
        async move {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            let req = format!("GET /meshes HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            conn.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            conn.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let evil = raw("attacker.example:5681").await;
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
    assert!(evil.contains("DNS rebinding"), "{evil}");
    let ok = raw("localhost:5681").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}
