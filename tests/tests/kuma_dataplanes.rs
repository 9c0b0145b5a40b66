//! Dataplanes as Kuma's documentation writes them serve traffic: the
//! plainest one (an address and an inbound with a port and a service; the
//! application on loopback), and one with outbounds only.

use std::net::SocketAddr;

use koguma_e2e::{ControlPlane, Dataplane, TestNet, apps, client};

/// koguma-dp registering the Dataplane `yaml`, as users run it.
fn start(cp: &ControlPlane, name: &str, yaml: &str, dir: &std::path::Path) -> Dataplane {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let args = ["--dataplane-file".to_string(), file.display().to_string()];
    Dataplane::start_with(cp, name, &args, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plainest_dataplane_and_an_outbound_only_one_carry_traffic() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(net.host(0), dir.path()).await;
    let (web_ip, backend_ip) = (net.host(1), net.host(2));
    // The application listens on loopback, on the inbound's own port (a
    // free one: other tests share 127.0.0.1).
    let port = TestNet::free_port();
    let _app = apps::http(SocketAddr::from(([127, 0, 0, 1], port)), "plain").await;
    let backend = start(
        &cp,
        "backend-1",
        &format!(
            "type: Dataplane\nmesh: default\nname: backend-1\nnetworking:\n  address: {backend_ip}\n  inbound:\n  - port: {port}\n    tags:\n      kuma.io/service: backend\n      kuma.io/protocol: http\n"
        ),
        dir.path(),
    );
    // No inbound at all: a client of the mesh only.
    let web = start(
        &cp,
        "web-1",
        &format!(
            "type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: {web_ip}\n  outbound:\n  - address: {web_ip}\n    port: 10001\n    tags:\n      kuma.io/service: backend\n"
        ),
        dir.path(),
    );
    backend.wait_ready().await;
    web.wait_ready().await;
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 1)
        .await;
    let r = client::get(&format!("http://{web_ip}:10001/"))
        .await
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    // The inbound forwards to 127.0.0.1:<port>, as the config says.
    let (_, config) = cp
        .get_json("/meshes/default/dataplanes/backend-1/_config")
        .await;
    let inbound = &config["config"]["inbounds"][0];
    assert_eq!(inbound["serviceAddress"], "127.0.0.1", "{config}");
}
