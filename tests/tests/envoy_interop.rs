//! Interoperability with a proxy no one here wrote: Envoy, holding a
//! workload certificate from the mesh CA, calls a Koguma inbound over mesh
//! mTLS and is authorized by its SPIFFE identity; a Koguma outbound calls
//! an Envoy inbound that verifies Koguma's certificate.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::process::Process;
use koguma_e2e::{ControlPlane, Dataplane, TestNet, apps, binaries, client, eventually, mtls};

fn envoy_binary() -> Option<PathBuf> {
    let path = binaries::workspace().join("bench/.venv/bin/envoy");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install Envoy (bash bench/setup.sh)"
    );
    eprintln!(
        "SKIPPED: Envoy interop needs bench/.venv/bin/envoy; `bash bench/setup.sh` installs it"
    );
    None
}

fn tls_context(cert: &Path, key: &Path, ca: &Path, san: &str) -> String {
    format!(
        r#"common_tls_context:
            alpn_protocols: ["kuma"]
            tls_params: {{tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}}
            tls_certificates: [{{certificate_chain: {{filename: "{}"}}, private_key: {{filename: "{}"}}}}]
            validation_context:
              trusted_ca: {{filename: "{}"}}
              match_typed_subject_alt_names: [{{san_type: URI, matcher: {san}}}]"#,
        cert.display(),
        key.display(),
        ca.display()
    )
}

fn http_filters(stat: &str, cluster: &str, xfcc: bool) -> String {
    let forward = if xfcc {
        "forward_client_cert_details: SANITIZE_SET\n          set_current_client_cert_details: {uri: true}\n          "
    } else {
        ""
    };
    format!(
        r#"- name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat}
          {forward}route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: {cluster}}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}"#
    )
}

fn cluster(name: &str, addr: SocketAddr, tls: Option<String>) -> String {
    let socket = tls.map_or(String::new(), |t| {
        format!(
            r#"
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        {t}"#
        )
    });
    format!(
        r#"
  - name: {name}
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: {name}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: "{}", port_value: {}}}}}}}}}]}}]{socket}"#,
        addr.ip(),
        addr.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_and_koguma_speak_mesh_mtls_to_each_other() {
    let Some(envoy) = envoy_binary() else { return };
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = ControlPlane::start(net.host(0), d).await;
    mtls::enable(&cp, "STRICT", "24h").await;
    mtls::permit(
        &cp,
        "callers",
        &[
            ("{kind: MeshService, name: envoy-client}", "Allow"),
            ("{kind: MeshService, name: web}", "Allow"),
        ],
    )
    .await;

    // Koguma side: web (outbound to envoy-backend) and backend (an app).
    let (web_ip, backend_ip, envoy_ip): (IpAddr, IpAddr, IpAddr) =
        (net.host(1), net.host(2), net.host(3));
    let _app = apps::http(SocketAddr::new(backend_ip, 18081), "b1").await;
    let backend =
        DataplaneYaml::new("backend-1", backend_ip).inbound(8081, 18081, "backend", "http");
    let backend_dp = Dataplane::start(&cp, &backend, d);
    let web = DataplaneYaml::new("web-1", web_ip)
        .inbound(8080, 18080, "web", "http")
        .outbound(web_ip, 10003, "envoy-backend");
    let web_dp = Dataplane::start(&cp, &web, d);

    // Envoy side: an inbound for service envoy-backend (registered through
    // the API, as a dataplane without a Koguma agent) in front of an app,
    // and an outbound that calls Koguma's backend as envoy-client.
    let _envoy_app = apps::http(SocketAddr::new(envoy_ip, 18090), "envoy-app").await;
    cp.apply(
        &DataplaneYaml::new("envoy-backend-1", envoy_ip)
            .inbound(8090, 18090, "envoy-backend", "http")
            .to_yaml(),
    )
    .await;
    let (srv_cert, srv_key, ca) = mtls::workload_cert(&cp, "envoy-backend", d).await;
    let (cli_cert, cli_key, _) = mtls::workload_cert(&cp, "envoy-client", d).await;
    let (other_cert, other_key, _) = {
        let sub = d.join("other");
        std::fs::create_dir_all(&sub).unwrap();
        mtls::workload_cert(&cp, "envoy-other", &sub).await
    };
    let inbound_tls = tls_context(&srv_cert, &srv_key, &ca, r#"{prefix: "spiffe://default/"}"#);
    let exact_backend = r#"{exact: "spiffe://default/backend"}"#;
    let config = format!(
        r#"static_resources:
  listeners:
  - name: inbound
    address: {{socket_address: {{address: "{envoy_ip}", port_value: 8090}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          {inbound_tls}
      filters:
      {}
  - name: as-envoy-client
    address: {{socket_address: {{address: "{envoy_ip}", port_value: 10010}}}}
    filter_chains:
    - filters:
      {}
  - name: as-envoy-other
    address: {{socket_address: {{address: "{envoy_ip}", port_value: 10011}}}}
    filter_chains:
    - filters:
      {}
  clusters:{}{}{}
"#,
        http_filters("inbound", "app", true),
        http_filters("as_client", "koguma_backend", false),
        http_filters("as_other", "koguma_backend_other", false),
        cluster("app", SocketAddr::new(envoy_ip, 18090), None),
        cluster(
            "koguma_backend",
            SocketAddr::new(backend_ip, 8081),
            Some(tls_context(&cli_cert, &cli_key, &ca, exact_backend))
        ),
        cluster(
            "koguma_backend_other",
            SocketAddr::new(backend_ip, 8081),
            Some(tls_context(&other_cert, &other_key, &ca, exact_backend))
        ),
    );
    let config_path = d.join("envoy.yaml");
    std::fs::write(&config_path, &config).unwrap();
    let mut cmd = Command::new(&envoy);
    cmd.arg("-c").arg(&config_path).args([
        "--disable-hot-restart",
        "--log-level",
        "warn",
        "--concurrency",
        "1",
    ]);
    let _envoy_proc = Process::spawn("envoy", cmd, d);
    backend_dp.wait_ready().await;
    web_dp.wait_ready().await;

    // Envoy → Koguma: authorized as envoy-client by its certificate.
    let body = eventually(
        "Envoy to reach Koguma's backend",
        Duration::from_secs(20),
        || async {
            let r = client::get(&format!("http://{envoy_ip}:10010/xfcc"))
                .await
                .ok()?;
            (r.status == 200).then(|| r.text())
        },
    )
    .await;
    eprintln!("Envoy → Koguma, the app saw: {body}");
    assert!(body.contains("URI=spiffe://default/envoy-client"), "{body}");
    // The same Envoy with a certificate nobody allowed: denied.
    let r = client::get(&format!("http://{envoy_ip}:10011/"))
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("spiffe://default/envoy-other"),
        "{}",
        r.text()
    );
    assert!(backend_dp.metric_sum("envoy_rbac_denied").await >= 1.0);

    // Koguma → Envoy: Envoy verified web's certificate and forwards it.
    web_dp
        .wait_endpoints(&format!("outbound:{web_ip}:10003"), 1)
        .await;
    let r = eventually(
        "Koguma to reach Envoy's inbound",
        Duration::from_secs(10),
        || async {
            let r = client::get(&format!("http://{web_ip}:10003/xfcc"))
                .await
                .ok()?;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    let xfcc = r.text();
    eprintln!("Koguma → Envoy, the app behind Envoy saw: {xfcc}");
    assert!(xfcc.contains("URI=spiffe://default/web"), "{xfcc}");
}
