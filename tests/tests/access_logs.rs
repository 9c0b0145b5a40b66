//! MeshAccessLog as a user sees it: lines in Kuma's formats for requests
//! and connections through real sidecars, to a file, to a TCP collector and
//! to an OTLP collector of the test's own; a collector that stops reading
//! costs requests nothing and its lost lines are counted; a rotated file
//! keeps being written.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use koguma_e2e::{WebToBackend, binaries, client, eventually};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The lines of `path` once there are `n` of them.
async fn lines(path: &Path, n: usize) -> Vec<String> {
    eventually(
        &format!("{n} lines in {}", path.display()),
        Duration::from_secs(10),
        || async {
            let text = std::fs::read_to_string(path).ok()?;
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            (lines.len() >= n).then_some(lines)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_logged_in_kumas_default_format_and_as_json_on_both_sidecars() {
    let mesh = WebToBackend::start(1).await;
    let dir = mesh.dir.path();
    let (web_log, web_json, backend_log) = (
        dir.join("web.log"),
        dir.join("web.json"),
        dir.join("backend.log"),
    );
    let yaml = format!(
        "type: MeshAccessLog\nmesh: default\nname: web-out\nspec:\n  targetRef: {{kind: MeshService, name: web}}\n  to:\n  - targetRef: {{kind: MeshService, name: backend}}\n    default:\n      backends:\n      - type: File\n        file: {{path: {}}}\n      - type: File\n        file:\n          path: {}\n          format:\n            type: Json\n            json:\n            - {{key: method, value: \"%REQ(:METHOD)%\"}}\n            - {{key: path, value: \"%REQ(:PATH)%\"}}\n            - {{key: status, value: \"%RESPONSE_CODE%\"}}\n            - {{key: sent, value: \"%BYTES_SENT%\"}}\n            - {{key: received, value: \"%BYTES_RECEIVED%\"}}\n            - {{key: upstream, value: \"%UPSTREAM_HOST%\"}}\n            - {{key: route, value: \"%KUMA_SOURCE_SERVICE%->%KUMA_DESTINATION_SERVICE%\"}}\n            - {{key: agent, value: \"%REQ(USER-AGENT)%\"}}\n            - {{key: missing, value: \"%REQ(X-NOT-SENT)%\"}}\n---\ntype: MeshAccessLog\nmesh: default\nname: backend-in\nspec:\n  targetRef: {{kind: MeshService, name: backend}}\n  from:\n  - targetRef: {{kind: Mesh}}\n    default:\n      backends:\n      - type: File\n        file: {{path: {}}}\n",
        web_log.display(),
        web_json.display(),
        backend_log.display()
    );
    mesh.apply_and_see(&mesh.web, &yaml, "web.json").await;
    mesh.backends[0].dp.wait_config("backend.log").await;
    let http = client::Http1::default();
    for i in 0..5 {
        let r = http
            .send(
                http::Method::GET,
                &mesh.url(&format!("/hello?i={i}")),
                &[("user-agent", "koguma-e2e")],
                bytes::Bytes::new(),
            )
            .await
            .expect("request");
        assert_eq!(r.status, 200);
    }
    // And one with a body, sent back: 12 bytes each way.
    let r = http
        .send(
            http::Method::POST,
            &mesh.url("/flaky"),
            &[("user-agent", "koguma-e2e")],
            bytes::Bytes::from_static(b"twelve bytes"),
        )
        .await
        .expect("post");
    assert_eq!(r.text(), "twelve bytes");
    let web_ip = mesh.web_ip;
    let backend_ip = mesh.net.host(2);
    let text = lines(&web_log, 6).await;
    println!("web, Kuma's default HTTP format:\n{}", text[0]);
    for (i, line) in text.iter().take(5).enumerate() {
        assert!(line.starts_with('['), "{line}");
        assert!(
            line.contains(&format!("default \"GET /hello?i={i} HTTP/1.1\" 200 - 0 2 ")),
            "{line}"
        );
        assert!(
            line.ends_with(&format!(
                "\" \"{web_ip}:10001\" \"web\" \"backend\" \"{web_ip}\" \"{backend_ip}:8081\""
            )),
            "{line}"
        );
        assert_eq!(request_id(line).len(), 36, "a UUID: {line}");
    }
    let json = lines(&web_json, 6).await;
    println!("web, Json format:\n{}", json[0]);
    let first: serde_json::Value = serde_json::from_str(&json[0]).expect("a JSON line");
    assert_eq!(
        first,
        serde_json::json!({"method": "GET", "path": "/hello?i=0", "status": 200, "sent": 2,
            "received": 0, "upstream": format!("{backend_ip}:8081"), "route": "web->backend",
            "agent": "koguma-e2e", "missing": null})
    );
    let post: serde_json::Value = serde_json::from_str(&json[5]).expect("a JSON line");
    assert_eq!(
        (&post["method"], &post["received"], &post["sent"]),
        (&"POST".into(), &12.into(), &12.into())
    );
    let inbound = lines(&backend_log, 6).await;
    println!("backend, inbound:\n{}", inbound[0]);
    assert!(
        inbound[0].ends_with(&format!(
            "\"unknown\" \"backend\" \"{backend_ip}\" \"{backend_ip}:18081\""
        )),
        "{}",
        inbound[0]
    );
    // One request, one id, on both sidecars' lines: the caller's sidecar
    // made it, the callee's kept it.
    for (out, inb) in text.iter().zip(&inbound) {
        assert_eq!(request_id(out), request_id(inb), "{out}\n{inb}");
    }
}

/// The `"%REQ(X-REQUEST-ID)%"` field of a line in Kuma's default HTTP
/// format: after the user agent and the trace id.
fn request_id(line: &str) -> &str {
    let after_agent = line.split("\"koguma-e2e\" \"").nth(1).unwrap_or("");
    after_agent.split("\" \"").nth(1).unwrap_or("")
}

/// A TCP collector of the test's own: every line it receives.
async fn collector(addr: SocketAddr) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let listener = TcpListener::bind(addr).await.expect("collector");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(conn).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
    });
    rx
}

async fn next_lines(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    n: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(line)) => out.push(line),
            _ => panic!("{} of {n} lines came: {out:?}", out.len()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_tcp_connections_reach_a_tcp_collector() {
    let mesh = WebToBackend::start(1).await;
    let echo = mesh.add_echo().await;
    let collector_addr = SocketAddr::new(mesh.net.host(10), 5170);
    let mut rx = collector(collector_addr).await;
    // One policy for both outbounds: Kuma's default TCP format for echo,
    // a plain format of its own for backend.
    let yaml = format!(
        "type: MeshAccessLog\nmesh: default\nname: to-collector\nspec:\n  targetRef: {{kind: Mesh}}\n  to:\n  - targetRef: {{kind: MeshService, name: echo}}\n    default:\n      backends:\n      - type: Tcp\n        tcp: {{address: \"{collector_addr}\"}}\n  - targetRef: {{kind: MeshService, name: backend}}\n    default:\n      backends:\n      - type: Tcp\n        tcp:\n          address: \"{collector_addr}\"\n          format: {{type: Plain, plain: \"%KUMA_SOURCE_SERVICE%->%KUMA_DESTINATION_SERVICE% %RESPONSE_CODE% %REQ(:PATH)% %BYTES_SENT% %RESPONSE_FLAGS%\"}}\n"
    );
    mesh.apply_and_see(&mesh.web, &yaml, "%RESPONSE_FLAGS%")
        .await;
    let http = client::Http1::default();
    for path in ["/a", "/b", "/c"] {
        assert_eq!(
            http.get(&mesh.url(path)).await.expect("request").status,
            200
        );
    }
    let got = next_lines(&mut rx, 3).await;
    assert_eq!(
        got,
        [
            "web->backend 200 /a 2 -",
            "web->backend 200 /b 2 -",
            "web->backend 200 /c 2 -"
        ]
    );
    let mut conn = TcpStream::connect(echo.addr).await.expect("echo");
    conn.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    drop(conn);
    let tcp = next_lines(&mut rx, 1).await;
    println!("echo, Kuma's default TCP format:\n{}", tcp[0]);
    let web_ip = mesh.web_ip;
    assert!(tcp[0].starts_with('['), "{}", tcp[0]);
    assert!(
        tcp[0].contains(&format!(
            "] - default {web_ip}(web)->{}(echo) took ",
            echo.inbound
        )),
        "{}",
        tcp[0]
    );
    assert!(
        tcp[0].ends_with("ms, sent 4 bytes, received: 4 bytes"),
        "{}",
        tcp[0]
    );
}

const OTLP_RECEIVER: &str = r#"
import json, sys, grpc
from concurrent import futures
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
def text(v):
    return v.string_value
class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def Export(self, request, context):
        for rl in request.resource_logs:
            resource = {kv.key: text(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    print(json.dumps({"body": text(r.body), "resource": resource,
                        "attributes": {kv.key: text(kv.value) for kv in r.attributes},
                        "time": r.time_unix_nano}), flush=True)
        return logs_service_pb2.ExportLogsServiceResponse()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
server.add_insecure_port(sys.argv[1])
server.start()
print("listening", flush=True)
server.wait_for_termination()
"#;

/// The Python with grpcio and opentelemetry-proto (`tests/setup.sh`).
fn otlp_python() -> Option<PathBuf> {
    let python = binaries::workspace().join("tests/.venv/bin/python3");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import grpc, opentelemetry.proto.collector.logs.v1"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "tests/.venv lacks grpcio or opentelemetry-proto under CI: .ci/run runs tests/setup.sh"
    );
    eprintln!("SKIPPED: run tests/setup.sh to install the OTLP receiver's libraries");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_an_otlp_collector_on_port_4317() {
    let Some(python) = otlp_python() else { return };
    let mesh = WebToBackend::start(1).await;
    let otel_ip = mesh.net.host(11);
    let mut receiver = tokio::process::Command::new(&python)
        .args(["-c", OTLP_RECEIVER, &format!("{otel_ip}:4317")])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("OTLP receiver");
    let mut out = BufReader::new(receiver.stdout.take().expect("stdout")).lines();
    assert_eq!(out.next_line().await.unwrap().as_deref(), Some("listening"));
    // No port: OTLP/gRPC's 4317.
    let yaml = format!(
        "type: MeshAccessLog\nmesh: default\nname: to-otel\nspec:\n  to:\n  - targetRef: {{kind: Mesh}}\n    default:\n      backends:\n      - type: OpenTelemetry\n        openTelemetry:\n          endpoint: \"{otel_ip}\"\n          body: \"%KUMA_SOURCE_SERVICE% %REQ(:PATH)% %RESPONSE_CODE%\"\n          attributes:\n          - {{key: http.path, value: \"%REQ(:PATH)%\"}}\n          - {{key: direction, value: \"%KUMA_TRAFFIC_DIRECTION%\"}}\n"
    );
    mesh.apply_and_see(&mesh.web, &yaml, &format!("{otel_ip}:4317"))
        .await;
    let http = client::Http1::default();
    for i in 0..3 {
        let r = http
            .get(&mesh.url(&format!("/otel/{i}")))
            .await
            .expect("request");
        assert_eq!(r.status, 200);
    }
    let mut records = Vec::new();
    while records.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(10), out.next_line())
            .await
            .expect("an OTLP record within 10 s")
            .unwrap()
            .expect("receiver output");
        records.push(serde_json::from_str::<serde_json::Value>(&line).expect("JSON"));
    }
    println!("first OTLP record: {}", records[0]);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["body"], format!("web /otel/{i} 200"));
        assert_eq!(r["attributes"]["http.path"], format!("/otel/{i}"));
        assert_eq!(r["attributes"]["direction"], "OUTBOUND");
        assert_eq!(r["resource"]["kuma.mesh"], "default");
        assert!(r["time"].as_u64().is_some_and(|t| t > 0));
    }
    assert_eq!(
        mesh.web.metric_sum("koguma_access_log_written_total").await,
        3.0
    );
}

/// `total` GETs (with an `x-pad` header of `pad`) over `clients`
/// keep-alive clients at once: requests per second, the slowest request,
/// how many were answered 200.
async fn load(url: &str, pad: &str, clients: usize, total: usize) -> (f64, Duration, usize) {
    let started = Instant::now();
    let per = total / clients;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, pad) = (client::Http1::default(), url.to_string(), pad.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut slowest, mut ok) = (Duration::ZERO, 0);
            for _ in 0..per {
                let t = Instant::now();
                let sent = http
                    .send(
                        http::Method::GET,
                        &url,
                        &[("x-pad", &pad)],
                        bytes::Bytes::new(),
                    )
                    .await;
                if sent.is_ok_and(|r| r.status == 200) {
                    ok += 1;
                }
                slowest = slowest.max(t.elapsed());
            }
            (slowest, ok)
        }));
    }
    let (mut slowest, mut ok) = (Duration::ZERO, 0);
    for t in tasks {
        let (s, o) = t.await.unwrap();
        slowest = slowest.max(s);
        ok += o;
    }
    (
        (per * clients) as f64 / started.elapsed().as_secs_f64(),
        slowest,
        ok,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_stops_reading_costs_requests_nothing_and_drops_are_counted() {
    let mesh = WebToBackend::start(1).await;
    // Accepts, then never reads: once the socket buffers are full, every
    // write to it blocks.
    let stuck_addr = SocketAddr::new(mesh.net.host(10), 5171);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(stuck_addr).unwrap();
    let listener = socket.listen(16).unwrap();
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let holder = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            holder.lock().await.push(conn);
        }
    });
    let url = mesh.url("/");
    // Lines padded to 4 KiB, so that the socket buffers fill soon.
    let pad = "p".repeat(4096);
    let (before, before_slowest, ok) = load(&url, &pad, 16, 6_000).await;
    assert_eq!(ok, 6_000);
    let yaml = format!(
        "type: MeshAccessLog\nmesh: default\nname: stuck\nspec:\n  to:\n  - targetRef: {{kind: Mesh}}\n    default:\n      backends:\n      - type: Tcp\n        tcp:\n          address: \"{stuck_addr}\"\n          format: {{type: Plain, plain: \"%START_TIME% %REQ(X-PAD)% %RESPONSE_CODE%\"}}\n"
    );
    mesh.apply_and_see(&mesh.web, &yaml, "X-PAD").await;
    let (during, during_slowest, ok) = load(&url, &pad, 16, 12_000).await;
    assert_eq!(
        ok, 12_000,
        "every request through while the collector is stuck"
    );
    let dropped = mesh.web.metric_sum("koguma_access_log_dropped_total").await;
    let written = mesh.web.metric_sum("koguma_access_log_written_total").await;
    println!(
        "16 clients, 4 KiB headers: without the log {before:.0} rq/s (slowest {before_slowest:?}); logging to a stuck collector {during:.0} rq/s (slowest {during_slowest:?}), {written} lines written, {dropped} dropped"
    );
    assert!(dropped > 0.0, "the queue overflowed and counted its losses");
    assert!(
        during_slowest < Duration::from_secs(2),
        "a request waited on the stuck collector: {during_slowest:?}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_file_keeps_being_written() {
    let mesh = WebToBackend::start(1).await;
    let path = mesh.dir.path().join("rotating.log");
    let yaml = format!(
        "type: MeshAccessLog\nmesh: default\nname: rotating\nspec:\n  to:\n  - targetRef: {{kind: Mesh}}\n    default:\n      backends:\n      - type: File\n        file:\n          path: {}\n          format: {{type: Plain, plain: \"%REQ(:PATH)%\"}}\n",
        path.display()
    );
    mesh.apply_and_see(&mesh.web, &yaml, "rotating.log").await;
    let http = client::Http1::default();
    let send = |paths: [&'static str; 3]| {
        let (http, mesh_url) = (http.clone(), mesh.url(""));
        async move {
            for p in paths {
                let r = http.get(&format!("{mesh_url}{p}")).await.expect("request");
                assert_eq!(r.status, 200);
            }
        }
    };
    send(["/1", "/2", "/3"]).await;
    assert_eq!(lines(&path, 3).await, ["/1", "/2", "/3"]);
    // logrotate's default: the file moved away, a new one expected.
    let first = path.with_extension("log.1");
    std::fs::rename(&path, &first).unwrap();
    send(["/4", "/5", "/6"]).await;
    assert_eq!(lines(&path, 3).await, ["/4", "/5", "/6"]);
    assert_eq!(std::fs::read_to_string(&first).unwrap(), "/1\n/2\n/3\n");
    // And with the HUP logrotate sends after moving it.
    let second = path.with_extension("log.2");
    std::fs::rename(&path, &second).unwrap();
    mesh.web.sighup();
    send(["/7", "/8", "/9"]).await;
    assert_eq!(lines(&path, 3).await, ["/7", "/8", "/9"]);
    assert_eq!(std::fs::read_to_string(&second).unwrap(), "/4\n/5\n/6\n");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o640,
        "access log files are not world-readable"
    );
}
