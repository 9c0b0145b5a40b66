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
