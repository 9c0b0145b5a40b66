//! HTTP through a sidecar pair under mesh mTLS, as Envoy carries it under
//! Kuma: upgrades (a WebSocket echo with a real client library), the route
//! timeout that starts when the request has been sent (a 60 s upload is
//! not cut; a slow response still is), the headers Envoy adds and keeps,
//! the caller's authority kept for HTTP/2 and gRPC, and a server-first
//! protocol on an `http` service closed with a clear log line rather than
//! left hanging. Between the two sidecars, HTTP/1.1 callers' requests
//! travel over one shared HTTP/2 connection; everything above holds across
//! that hop.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::{ControlPlane, Dataplane, TestNet, apps, binaries, client, mtls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Pair {
    _net: TestNet,
    dir: tempfile::TempDir,
    _cp: ControlPlane,
    web: Dataplane,
    web_ip: IpAddr,
    backend_ip: IpAddr,
    _backend: Dataplane,
    _apps: Vec<apps::Server>,
}

/// web calls backend's services through its outbounds: 10001 `http`
/// (18081), 10002 `http2` (18082), 10003 `grpc` (18083), 10005 `http` for
/// a WebSocket app the test starts on 18085, 10006 `http` for a
/// server-first app the test starts on 18086.
async fn pair() -> Pair {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let (web_ip, backend_ip) = (net.host(1), net.host(2));
    let cp = ControlPlane::start(net.host(0), dir.path()).await;
    mtls::enable(&cp, "STRICT", "24h").await;
    mtls::forbid_nothing(&cp).await;
    let mut started = Vec::new();
    for (port, id) in [
        (18081, "backend-http"),
        (18082, "backend-h2"),
        (18083, "backend-grpc"),
    ] {
        started.push(apps::http(SocketAddr::new(backend_ip, port), id).await);
    }
    let backend = Dataplane::start(
        &cp,
        &DataplaneYaml::new("backend-1", backend_ip)
            .inbound(8081, 18081, "backend-http", "http")
            .inbound(8082, 18082, "backend-h2", "http2")
            .inbound(8083, 18083, "backend-grpc", "grpc")
            .inbound(8085, 18085, "backend-ws", "http")
            .inbound(8086, 18086, "backend-smtp", "http"),
        dir.path(),
    );
    let web = Dataplane::start(
        &cp,
        &DataplaneYaml::new("web-1", web_ip)
            .inbound(8080, 18080, "web", "http")
            .outbound(web_ip, 10001, "backend-http")
            .outbound(web_ip, 10002, "backend-h2")
            .outbound(web_ip, 10003, "backend-grpc")
            .outbound(web_ip, 10005, "backend-ws")
            .outbound(web_ip, 10006, "backend-smtp"),
        dir.path(),
    );
    backend.wait_ready().await;
    web.wait_ready().await;
    for port in [10001, 10002, 10003, 10005, 10006] {
        web.wait_endpoints(&format!("outbound:{web_ip}:{port}"), 1)
            .await;
    }
    Pair {
        _net: net,
        dir,
        _cp: cp,
        web,
        web_ip,
        backend_ip,
        _backend: backend,
        _apps: started,
    }
}

fn header_lines(body: &str) -> Vec<(&str, &str)> {
    body.lines().filter_map(|l| l.split_once(": ")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set_and_kept_as_envoy_does() {
    let p = pair().await;
    let url = format!("http://{}:10001/headers", p.web_ip);
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-H", "x-forwarded-for: 203.0.113.7", &url])
        .output()
        .await
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let headers = header_lines(&body);
    let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    assert_eq!(get("x-forwarded-proto"), Some("http"), "{body}");
    assert_eq!(get("x-forwarded-for"), Some("203.0.113.7"), "{body}");
    assert_eq!(
        get("host"),
        Some(format!("{}:10001", p.web_ip).as_str()),
        "{body}"
    );
    let id = get("x-request-id").unwrap_or_else(|| panic!("no x-request-id: {body}"));
    assert_eq!(id.len(), 36, "not a UUID: {id}");
    assert_eq!(&id[14..15], "4", "not a version 4 UUID: {id}");

    // A caller's own request id and forwarded proto go through unchanged.
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-H",
            "x-request-id: caller-chosen-1",
            "-H",
            "x-forwarded-proto: https",
            &url,
        ])
        .output()
        .await
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let headers = header_lines(&body);
    assert!(
        headers.contains(&("x-request-id", "caller-chosen-1")),
        "{body}"
    );
    assert!(headers.contains(&("x-forwarded-proto", "https")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_grpc_keep_the_callers_authority() {
    let p = pair().await;
    // HTTP/2: the app sees the authority the client used, not the
    // endpoint's address.
    let r = client::h2_post(
        &format!("http://{}:10002/echo", p.web_ip),
        Bytes::from_static(b"hi"),
        HeaderMap::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let expected = format!("{}:10002", p.web_ip);
    assert_eq!(
        r.headers["x-seen-authority"].to_str().unwrap(),
        expected,
        "HTTP/2 app saw another authority"
    );
    // gRPC, with tonic's client: the same, read from the response metadata.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}:10003", p.web_ip))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "koguma.test".into(),
        })
        .await
        .expect("gRPC health check through the sidecars");
    assert_eq!(
        resp.metadata()
            .get("x-seen-authority")
            .and_then(|v| v.to_str().ok()),
        Some(format!("{}:10003", p.web_ip).as_str()),
        "gRPC app saw another authority"
    );
    assert_eq!(resp.get_ref().status, 1, "SERVING");
    // HTTP/1.1 keeps Host, as before.
    let r = client::get(&format!("http://{}:10001/", p.web_ip))
        .await
        .unwrap();
    assert_eq!(
        r.headers["x-seen-authority"].to_str().unwrap(),
        format!("{}:10001", p.web_ip)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_callers_share_one_http2_connection_between_the_sidecars() {
    let p = pair().await;
    let url = format!("http://{}:10001/headers", p.web_ip);
    let cx_total = "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"backend-http\"}";
    client::get(&url).await.expect("first request");
    assert_eq!(p.web.metric(cx_total).await, 1.0);
    // 32 callers at once, each on its own HTTP/1.1 connection.
    let calls: Vec<_> = (0..32)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let r = client::Http1::default().get(&url).await.expect("request");
                (i, r.status, r.text())
            })
        })
        .collect();
    let host = format!("host: {}:10001", p.web_ip);
    for call in calls {
        let (i, status, body) = call.await.unwrap();
        assert_eq!(status, 200, "caller {i}: {body}");
        assert!(body.lines().any(|l| l == host), "caller {i}: {body}");
    }
    // One connection between web and backend carried all of them.
    assert_eq!(
        p.web.metric(cx_total).await,
        1.0,
        "{}",
        p.web.metrics().await
    );
    let active = "envoy_cluster_upstream_cx_active{envoy_cluster_name=\"backend-http\"}";
    assert_eq!(p.web.metric(active).await, 1.0);
    // A 4 MiB upload streams through it whole.
    let mut child = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-H",
            "transfer-encoding: chunked",
            "--data-binary",
            "@-",
        ])
        .arg(format!("http://{}:10001/upload", p.web_ip))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&vec![7u8; 4 << 20]).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("received {}", 4 << 20)
    );
}

/// The Python with the `websockets` library (`tests/setup.sh`); `None`,
/// with the reason printed, when it is not installed outside CI.
fn websocket_python(test: &str) -> Option<PathBuf> {
    let python = binaries::workspace().join("tests/.venv/bin/python3");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: tests/.venv is missing under CI: .ci/run runs tests/setup.sh"
    );
    eprintln!("SKIPPED {test}: run tests/setup.sh to install the WebSocket library");
    None
}

const WS_ECHO_SERVER: &str = r#"
import asyncio, sys, websockets
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    async with websockets.serve(echo, sys.argv[1], int(sys.argv[2]), max_size=None):
        print("listening", flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

const WS_CLIENT: &str = r#"
import asyncio, os, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1], max_size=None) as ws:
        for text in ["hello", "through", "two sidecars"]:
            await ws.send(text)
            assert await ws.recv() == text
        blob = os.urandom(256 * 1024)
        await ws.send(blob)
        assert await ws.recv() == blob, "binary message changed"
        print("echoed 4 messages", flush=True)
asyncio.run(main())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echo_works_through_the_sidecars() {
    let Some(python) = websocket_python("a_websocket_echo_works_through_the_sidecars") else {
        return;
    };
    let p = pair().await;
    let mut server = tokio::process::Command::new(&python)
        .args(["-c", WS_ECHO_SERVER, &p.backend_ip.to_string(), "18085"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python websocket server");
    let mut line = [0u8; 9];
    let mut stdout = server.stdout.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), stdout.read_exact(&mut line))
        .await
        .expect("the websocket server did not start")
        .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(&python)
            .args(["-c", WS_CLIENT, &format!("ws://{}:10005/chat", p.web_ip)])
            .output(),
    )
    .await
    .expect("the websocket client hung")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("echoed 4 messages"),
        "{stdout}{}\nweb:\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.web.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60s_upload_is_not_cut_while_a_slow_response_still_is() {
    let p = pair().await;
    // 960 KiB at 16 KiB/s: a minute of sending, four times the 15 s route
    // timeout.
    let file = p.dir.path().join("upload.bin");
    std::fs::write(&file, vec![7u8; 960 * 1024]).unwrap();
    let url = format!("http://{}:10001/upload", p.web_ip);
    let upload = async {
        let started = Instant::now();
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--limit-rate", "16K", "-w", "\n%{http_code}"])
            .args(["-H", "content-type: application/octet-stream"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(&url)
            .output()
            .await
            .expect("curl");
        (
            started.elapsed(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Meanwhile, a response that takes 17 s still meets the 15 s timeout,
    // counted from the end of its (empty) request.
    let slow = async {
        let started = Instant::now();
        let url = format!("http://{}:10001/slow?ms=17000", p.web_ip);
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url])
            .output()
            .await
            .expect("curl");
        (
            started.elapsed(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let ((upload_took, upload_out), (slow_took, slow_status)) = tokio::join!(upload, slow);
    println!("upload: {upload_took:?} {upload_out:?}; slow response: {slow_took:?} {slow_status}");
    assert_eq!(
        upload_out,
        format!("received {}\n200", 960 * 1024),
        "web:\n{}",
        p.web.log()
    );
    assert!(upload_took >= Duration::from_secs(50), "{upload_took:?}");
    assert_eq!(slow_status, "504");
    assert!(
        slow_took >= Duration::from_millis(14_500) && slow_took < Duration::from_secs(17),
        "{slow_took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_first_protocol_on_an_http_service_is_closed_with_a_reason() {
    let p = pair().await;
    // An SMTP-like server: it greets first and waits for its client.
    let listener = TcpListener::bind(SocketAddr::new(p.backend_ip, 18086))
        .await
        .unwrap();
    let _smtp = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"220 smtp.example ESMTP ready\r\n").await;
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let started = Instant::now();
    let mut client = TcpStream::connect((p.web_ip, 10006)).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut got)).await;
    let took = started.elapsed();
    assert!(read.is_ok(), "the connection hung for 30 s");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "closed after {took:?}"
    );
    assert!(
        p.web
            .log()
            .contains("seems to wait for the server to speak first"),
        "{}",
        p.web.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_opens_a_tunnel_to_the_callers_target() {
    let p = pair().await;
    // The application is an HTTP proxy: it answers CONNECT with 200, says
    // which target it was asked for, then echoes.
    let listener = TcpListener::bind(SocketAddr::new(p.backend_ip, 18085))
        .await
        .unwrap();
    let _proxy = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let reply = format!("HTTP/1.1 200 OK\r\nx-target: {target}\r\n\r\n");
                if s.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let mut client = TcpStream::connect((p.web_ip, 10005)).await.unwrap();
    client
        .write_all(b"CONNECT db.internal:5432 HTTP/1.1\r\nhost: db.internal:5432\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            client.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_head)
        .await
        .expect("no answer to CONNECT");
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-target: db.internal:5432"), "{head}");
    // Bytes both ways through the tunnel.
    client.write_all(b"raw bytes, not HTTP").await.unwrap();
    let mut echoed = [0u8; 19];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut echoed))
        .await
        .expect("tunnel hung")
        .unwrap();
    assert_eq!(&echoed, b"raw bytes, not HTTP");
}
