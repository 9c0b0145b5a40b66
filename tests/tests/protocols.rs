//! tcp, HTTP/1.1, HTTP/2 and gRPC through a sidecar pair:
//! app → web's outbound → backend's inbound → backend app, and back.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::{ControlPlane, Dataplane, TestNet, apps, client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_http1_http2_and_grpc_pass_through_a_sidecar_pair() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let (cp_ip, web_ip, backend_ip) = (net.host(0), net.host(1), net.host(2));
    let cp = ControlPlane::start(cp_ip, dir.path()).await;

    let _http = apps::http(SocketAddr::new(backend_ip, 18081), "backend-http").await;
    let _h2 = apps::http(SocketAddr::new(backend_ip, 18082), "backend-h2").await;
    let _grpc = apps::grpc_health(SocketAddr::new(backend_ip, 18083)).await;
    let _tcp = apps::tcp_echo(SocketAddr::new(backend_ip, 18084)).await;
    let backend = Dataplane::start(
        &cp,
        &DataplaneYaml::new("backend-1", backend_ip)
            .inbound(8081, 18081, "backend-http", "http")
            .inbound(8082, 18082, "backend-h2", "http2")
            .inbound(8083, 18083, "backend-grpc", "grpc")
            .inbound(8084, 18084, "backend-tcp", "tcp"),
        dir.path(),
    );
    let _web_app = apps::http(SocketAddr::new(web_ip, 18080), "web").await;
    let web = Dataplane::start(
        &cp,
        &DataplaneYaml::new("web-1", web_ip)
            .inbound(8080, 18080, "web", "http")
            .outbound(web_ip, 10001, "backend-http")
            .outbound(web_ip, 10002, "backend-h2")
            .outbound(web_ip, 10003, "backend-grpc")
            .outbound(web_ip, 10004, "backend-tcp"),
        dir.path(),
    );
    backend.wait_ready().await;
    web.wait_ready().await;
    for port in [10001, 10002, 10003, 10004] {
        web.wait_endpoints(&format!("outbound:{web_ip}:{port}"), 1)
            .await;
    }

    // HTTP/1.1
    let r = client::get(&format!("http://{web_ip}:10001/hello"))
        .await
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "backend-http"));

    // HTTP/2: a 256 KiB body and request trailers go up, come back intact,
    // and the app's own trailer comes with them.
    let body: Bytes = (0..256 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-checksum", HeaderValue::from_static("abc123"));
    let r = client::h2_post(
        &format!("http://{web_ip}:10002/echo"),
        body.clone(),
        trailers,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body, "HTTP/2 body changed on the way");
    assert_eq!(
        apps::trailer(&r.trailers, "x-client-checksum").as_deref(),
        Some("abc123")
    );
    assert_eq!(
        apps::trailer(&r.trailers, "x-app-id").as_deref(),
        Some("backend-h2")
    );

    // gRPC: a real client and server; status travels in trailers both for
    // success and for an error.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{web_ip}:10003"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let resp = health
        .check(HealthCheckRequest {
            service: "koguma.test".into(),
        })
        .await
        .unwrap();
    assert_eq!(resp.into_inner().status, ServingStatus::Serving as i32);
    let err = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // TCP: 1 MiB echoed back byte for byte.
    let mut conn = tokio::net::TcpStream::connect((web_ip, 10004))
        .await
        .unwrap();
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let (mut rd, mut wr) = conn.split();
    let (sent, received) = tokio::join!(
        async {
            wr.write_all(&payload).await.unwrap();
            wr.shutdown().await.unwrap();
        },
        async {
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.unwrap();
            got
        }
    );
    let () = sent;
    assert_eq!(received.len(), payload.len());
    assert!(received == payload, "TCP bytes changed on the way");

    // Both proxies counted what they carried.
    assert!(web.metric("envoy_cluster_upstream_rq_xx{envoy_cluster_name=\"backend-http\",envoy_response_code_class=\"2\"}").await >= 1.0);
    assert!(
        web.metric("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend-grpc\"}")
            .await
            >= 2.0
    );
    assert!(
        web.metric("envoy_cluster_upstream_cx_tx_bytes_total{envoy_cluster_name=\"backend-tcp\"}")
            .await
            >= 1048576.0
    );
    let inbound =
        "envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"localhost_18082\"}";
    assert!(
        backend.metric(inbound).await >= 1.0,
        "{}",
        backend.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_become_clear_errors_not_hangs() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let (cp_ip, web_ip, backend_ip) = (net.host(0), net.host(1), net.host(2));
    let cp = ControlPlane::start(cp_ip, dir.path()).await;
    // No app behind backend's inbound: the inbound cannot connect.
    let mut backend = Dataplane::start(
        &cp,
        &DataplaneYaml::new("backend-1", backend_ip).inbound(8081, 18081, "backend", "http"),
        dir.path(),
    );
    let web = Dataplane::start(
        &cp,
        &DataplaneYaml::new("web-1", web_ip)
            .inbound(8080, 18080, "web", "http")
            .outbound(web_ip, 10001, "backend"),
        dir.path(),
    );
    backend.wait_ready().await;
    web.wait_ready().await;
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 1)
        .await;

    let r = client::get(&format!("http://{web_ip}:10001/"))
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("upstream connect error"), "{}", r.text());

    assert!(
        backend
            .metric(
                "envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name=\"localhost_18081\"}"
            )
            .await
            >= 1.0
    );

    // The only backend leaves: the service is still HTTP, with no endpoint.
    backend.sigterm();
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 0)
        .await;
    let r = client::get(&format!("http://{web_ip}:10001/"))
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("no healthy upstream"), "{}", r.text());
    assert!(
        backend
            .wait_exit(std::time::Duration::from_secs(10))
            .await
            .is_some_and(|s| s.success())
    );
}
