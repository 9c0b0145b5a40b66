//! The control plane's store and CLI: resources survive a restart on the
//! embedded default; `get` shows them as tables, YAML and JSON.

use koguma_e2e::{ControlPlane, TestNet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_survive_a_restart_and_the_cli_shows_them() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(net.host(0), dir.path()).await;
    let meshes = "type: Mesh\nname: payments\nnetworking:\n  outbound:\n    passthrough: false\n---\ntype: Dataplane\nmesh: payments\nname: ledger-1\nnetworking:\n  address: 10.0.0.7\n  inbound:\n  - port: 8080\n    servicePort: 18080\n    tags:\n      kuma.io/service: ledger\n      kuma.io/protocol: http\n";
    let out = cp.cli(&["apply", "-f", "-"], Some(meshes)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Mesh \"payments\" created\nDataplane \"ledger-1\" created\n"
    );

    cp.restart().await;
    let (status, list) = cp.get_json("/meshes").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "payments"]);
    assert_eq!(list["total"], 2);

    let table = cp.cli(&["get", "meshes"], None).await;
    let table = String::from_utf8_lossy(&table.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("payments"))
        .unwrap_or_default();
    assert!(
        row.split_whitespace().collect::<Vec<_>>()[..3] == ["payments", "off", "off"],
        "{table}"
    );

    let yaml = cp
        .cli(
            &[
                "get",
                "dataplanes",
                "ledger-1",
                "--mesh",
                "payments",
                "-o",
                "yaml",
            ],
            None,
        )
        .await;
    let yaml = String::from_utf8_lossy(&yaml.stdout);
    assert!(
        yaml.contains("kuma.io/service: ledger") && yaml.contains("servicePort: 18080"),
        "{yaml}"
    );

    // A mesh with dataplanes cannot go; once they are gone, it can.
    let out = cp.cli(&["delete", "mesh", "payments"], None).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still dataplanes attached"));
    let out = cp
        .cli(
            &["delete", "dataplane", "ledger-1", "--mesh", "payments"],
            None,
        )
        .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "deleted Dataplane \"ledger-1\"\n"
    );
    assert!(
        cp.cli(&["delete", "mesh", "payments"], None)
            .await
            .status
            .success()
    );
    assert_eq!(cp.get_json("/meshes/payments").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataplane_created_through_the_api_is_served_by_name_and_outlives_its_agent() {
    use std::net::SocketAddr;
    use std::time::Duration;

    use koguma_e2e::dp::DataplaneYaml;
    use koguma_e2e::{Dataplane, apps, client, eventually};

    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(net.host(0), dir.path()).await;
    let ip = net.host(1);
    let _app = apps::http(SocketAddr::new(ip, 18081), "pre-created").await;
    cp.apply(
        &DataplaneYaml::new("backend-1", ip)
            .inbound(8081, 18081, "backend", "http")
            .to_yaml(),
    )
    .await;

    let args = ["--name", "backend-1", "--mesh", "default"].map(String::from);
    let mut dp = Dataplane::start_with(&cp, "backend-1", &args, dir.path());
    dp.wait_ready().await;
    let r = client::get(&format!("http://{ip}:8081/")).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "pre-created"));

    dp.sigterm();
    assert!(
        dp.wait_exit(Duration::from_secs(10))
            .await
            .is_some_and(|s| s.success())
    );
    eventually(
        "the CP to show it offline",
        Duration::from_secs(5),
        || async { (cp.insight("backend-1").await["online"] == false).then_some(()) },
    )
    .await;
    // Longer than the deregistration delay (3 s in tests): a person created
    // it, so it stays.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        cp.get_json("/meshes/default/dataplanes/backend-1").await.0,
        200
    );

    // An agent asking for a dataplane that does not exist keeps waiting
    // for it (it may be created later) and says why.
    let args = ["--name", "nobody", "--mesh", "default"].map(String::from);
    let mut ghost = Dataplane::start_with(&cp, "nobody", &args, dir.path());
    eventually(
        "the agent to report the missing dataplane",
        Duration::from_secs(10),
        || async { ghost.log().contains("not found").then_some(()) },
    )
    .await;
    assert!(ghost.is_running());
    assert_eq!(ghost.ready_status().await, Some(503));
}

/// The store holds mesh CA keys and token signing keys: it is created
/// readable by the CP's user only, and a store others may read is
/// reported at start with the command that fixes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_private_and_a_readable_one_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(net.host(0), dir.path()).await;
    let db = cp.data_dir.join("koguma.db");
    assert_eq!(mode(&cp.data_dir), 0o700, "data dir");
    assert_eq!(mode(&db), 0o600, "koguma.db");
    let wal = cp.data_dir.join("koguma.db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600, "koguma.db-wal");
    }
    assert!(!cp.log().contains("others may read it"), "{}", cp.log());

    cp.kill();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    cp.restart().await;
    let log = cp.log();
    assert!(
        log.contains("others may read it") && log.contains("chmod 600"),
        "no warning for a 0644 store: {log}"
    );
}
