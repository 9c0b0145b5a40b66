//! Mesh mTLS between real proxies: MeshTrafficPermission decides who may
//! call, established connections that lose their permission are closed,
//! clients from outside the mesh are refused, and certificates rotate
//! under load without losing a request.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::{Dataplane, WebToBackend, apps, client, eventually, mtls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until a GET through web's outbound answers `status`; returns the body.
async fn wait_status(m: &WebToBackend, path: &str, status: u16) -> String {
    eventually(
        &format!("GET {path} through web to answer {status}"),
        Duration::from_secs(10),
        || async {
            let r = client::get(&m.url(path)).await.ok()?;
            (r.status == status).then(|| r.text())
        },
    )
    .await
}

/// Waits until `conn` is closed by the proxy (read gives EOF or an error).
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(limit, conn.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn new_echo_connection(addr: SocketAddr) -> Option<TcpStream> {
    let mut conn = TcpStream::connect(addr).await.ok()?;
    apps::echoes(&mut conn).await.then_some(conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_decide_who_may_call_and_revocation_closes_connections() {
    let mut m = WebToBackend::start(1).await;
    // A TCP service too, to watch one long-lived connection.
    let echo_ip = m.net.host(6);
    let _echo_app = apps::tcp_echo(SocketAddr::new(echo_ip, 18082)).await;
    let echo = DataplaneYaml::new("echo-1", echo_ip).inbound(8082, 18082, "echo", "tcp");
    let echo_dp = Dataplane::start(&m.cp, &echo, m.dir.path());
    echo_dp.wait_ready().await;
    m.cp.apply(&m.web_yaml().outbound(m.web_ip, 10002, "echo").to_yaml())
        .await;
    let echo_addr = SocketAddr::new(m.web_ip, 10002);

    // mTLS on, no permission yet: Kuma 2.x denies everything.
    mtls::enable(&m.cp, "STRICT", "24h").await;
    let body = wait_status(&m, "/", 403).await;
    assert!(body.contains("RBAC: access denied"), "{body}");
    assert!(body.contains("spiffe://default/web"), "{body}");

    mtls::forbid_nothing(&m.cp).await;
    assert_eq!(wait_status(&m, "/", 200).await, "b1");
    let mut conn = eventually(
        "an echo connection through mTLS",
        Duration::from_secs(10),
        || new_echo_connection(echo_addr),
    )
    .await;
    let backend = &m.backends[0].dp;
    assert!(backend.metric_sum("envoy_listener_ssl_handshake").await >= 1.0);
    assert!(backend.metric_sum("envoy_rbac_allowed").await >= 1.0);
    assert!(echo_dp.metric_sum("envoy_rbac_allowed").await >= 1.0);

    // A Deny for web wins over the Mesh-wide Allow, for new requests and for
    // the connection already open.
    mtls::permit(
        &m.cp,
        "deny-web",
        &[("{kind: MeshService, name: web}", "Deny")],
    )
    .await;
    let body = wait_status(&m, "/", 403).await;
    assert!(body.contains("RBAC: access denied"), "{body}");
    let started = Instant::now();
    assert!(
        closed_within(&mut conn, Duration::from_secs(3)).await,
        "the established connection stayed open after its permission went"
    );
    eprintln!(
        "established connection closed after {:?}",
        started.elapsed()
    );
    assert!(new_echo_connection(echo_addr).await.is_none());
    assert!(backend.metric_sum("envoy_rbac_denied").await >= 1.0);
    assert!(echo_dp.metric_sum("envoy_rbac_denied").await >= 1.0);

    // Deny removed: allowed again. Then the allow removed: nothing allowed.
    let out =
        m.cp.cli(&["delete", "meshtrafficpermission", "deny-web"], None)
            .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(wait_status(&m, "/", 200).await, "b1");
    let mut conn = eventually("an echo connection again", Duration::from_secs(10), || {
        new_echo_connection(echo_addr)
    })
    .await;
    let out =
        m.cp.cli(&["delete", "meshtrafficpermission", "allow-all"], None)
            .await;
    assert!(out.status.success());
    wait_status(&m, "/", 403).await;
    assert!(closed_within(&mut conn, Duration::from_secs(3)).await);
    drop(m.backends.pop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_outside_the_mesh_are_refused() {
    let m = WebToBackend::start(1).await;
    mtls::enable(&m.cp, "STRICT", "24h").await;
    mtls::permit(
        &m.cp,
        "web-to-backend",
        &[("{kind: MeshService, name: web}", "Allow")],
    )
    .await;
    assert_eq!(wait_status(&m, "/", 200).await, "b1");
    let app = &m.backends[0].app;
    let inbound = format!("{}:8081", m.net.host(2));
    let https = format!("https://{inbound}/xfcc");
    let dir = m.dir.path();
    let hits_before = app.hits();

    // No client certificate: the handshake is refused.
    let out = mtls::curl_tls(&https, None).await;
    assert_eq!(mtls::curl_reply(&out).0, 0, "{out:?}");
    let mut s_client = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &inbound, "-alpn", "kuma", "-quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = s_client.stdin.take().unwrap();
    stdin.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), s_client.wait_with_output())
        .await
        .expect("s_client finished")
        .unwrap();
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("HTTP/1"),
        "answered without a certificate: {text}"
    );

    // A certificate naming web, from another CA.
    let (cert, key) = mtls::foreign_cert("spiffe://default/web", dir);
    let out = mtls::curl_tls(&https, Some((&cert, &key))).await;
    assert_eq!(mtls::curl_reply(&out).0, 0, "{out:?}");

    // Plaintext to a Strict inbound.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", &format!("http://{inbound}/")])
        .output()
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("b1"));
    assert_eq!(app.hits(), hits_before, "a refused client reached the app");

    // A valid certificate of the mesh, for a service nobody allowed.
    let (cert, key, _) = mtls::workload_cert(&m.cp, "intruder", dir).await;
    let (status, body) = mtls::curl_reply(&mtls::curl_tls(&https, Some((&cert, &key))).await);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("spiffe://default/intruder"), "{body}");
    assert_eq!(app.hits(), hits_before);

    // The same, for web: allowed, and the app learns who called.
    let (cert, key, _) = mtls::workload_cert(&m.cp, "web", dir).await;
    let (status, body) = mtls::curl_reply(&mtls::curl_tls(&https, Some((&cert, &key))).await);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("URI=spiffe://default/web"), "{body}");
    assert!(body.contains("By=spiffe://default/backend"), "{body}");

    // Permissive: plaintext is taken too, and mesh traffic still works.
    mtls::enable(&m.cp, "PERMISSIVE", "24h").await;
    eventually(
        "plaintext to be accepted",
        Duration::from_secs(10),
        || async {
            let r = client::get(&format!("http://{inbound}/")).await.ok()?;
            (r.status == 200 && r.text() == "b1").then_some(())
        },
    )
    .await;
    assert_eq!(wait_status(&m, "/", 200).await, "b1");
    let body = client::get(&m.url("/xfcc")).await.unwrap().text();
    assert!(body.contains("URI=spiffe://default/web"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_losing_a_request() {
    let m = WebToBackend::start(1).await;
    mtls::enable(&m.cp, "STRICT", "5s").await;
    mtls::forbid_nothing(&m.cp).await;
    // The mesh change reaches the sidecars within a batching window: wait
    // for web's certificate, then for traffic over it.
    let first = eventually("web to have a certificate", Duration::from_secs(10), || {
        m.web.cert()
    })
    .await;
    wait_status(&m, "/xfcc", 200).await;

    // 40 s at a steady pace: the 5 s certificates renew 4 s after they
    // arrive, so about ten renewals happen under load, each one well
    // before the certificate in force ends. Bounded in count and time.
    let keep_alive = client::Http1::default();
    let (mut ok, mut failed) = (0u32, Vec::new());
    let mut hashes = BTreeSet::new();
    let started = Instant::now();
    for i in 0..8000u32 {
        if started.elapsed() > Duration::from_secs(40) {
            break;
        }
        let r = if i % 10 == 0 {
            client::get(&m.url("/xfcc")).await // a fresh downstream connection
        } else {
            keep_alive.get(&m.url("/xfcc")).await
        };
        match r {
            Ok(r) if r.status == 200 => {
                ok += 1;
                let text = r.text();
                if let Some(h) = text.split(';').find_map(|p| p.strip_prefix("Hash=")) {
                    hashes.insert(h.to_string());
                }
            }
            Ok(r) => failed.push(format!("{} {}", r.status, r.text())),
            Err(e) => failed.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "{ok} requests, {} failed, {} certificates seen by backend",
        failed.len(),
        hashes.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed during rotation: {failed:?}"
    );
    assert!(ok > 200, "too few requests to say anything: {ok}");
    let last = m.web.cert().await.expect("certificate");
    assert_ne!(
        first["serialNumber"], last["serialNumber"],
        "web's certificate never renewed"
    );
    assert!(hashes.len() >= 5, "backend saw only {hashes:?}");
    // No handshake failed on either side: no certificate was used past its end.
    for dp in [&m.web, &m.backends[0].dp] {
        let errors = dp.metric_sum("envoy_listener_ssl_connection_error").await;
        assert_eq!(errors, 0.0, "TLS handshakes failed on {}", dp.name);
    }
    // The peer sees the certificate web has in force now.
    eventually(
        "backend to see web's current certificate",
        Duration::from_secs(5),
        || async {
            let now = m.web.cert().await?["sha256"].as_str()?.to_string();
            let seen = client::get(&m.url("/xfcc")).await.ok()?.text();
            (seen.contains(&format!("Hash={now}"))).then_some(())
        },
    )
    .await;
    let insight = m.cp.insight("web-1").await;
    assert!(
        insight["mTLS"]["certificateRegenerations"]
            .as_u64()
            .unwrap_or(0)
            >= 2,
        "{insight}"
    );
    // The REST API's _config is the config web runs, CA and certificate
    // included: same version as the one web applied and ACKed.
    eventually(
        "_config to show the version web runs",
        Duration::from_secs(10),
        || async {
            let (_, api) =
                m.cp.get_json("/meshes/default/dataplanes/web-1/_config")
                    .await;
            let running = m.web.config_dump().await["version"].clone();
            (api["version"] == running && api["ackedVersion"] == running).then_some(())
        },
    )
    .await;
}
