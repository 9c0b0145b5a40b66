//! Bad input is refused with the field named, and changes nothing: a bad
//! resource is not stored; a config the agent cannot apply is NACKed, the
//! CP shows why, and the old config stays in force.

use std::time::Duration;

use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::{ControlPlane, Dataplane, TestNet, WebToBackend, client, eventually};

const NO_SERVICE_TAG: &str = "type: Dataplane
mesh: default
name: broken
networking:
  address: 127.0.0.1
  inbound:
  - port: 8080
    tags:
      kuma.io/protocol: http
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_resource_is_refused_and_not_stored() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(net.host(0), dir.path()).await;

    let out = cp.cli(&["apply", "-f", "-"], Some(NO_SERVICE_TAG)).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"networking.inbound[0].tags["kuma.io/service"]: tag has to exist"#),
        "{stderr}"
    );
    assert_eq!(
        cp.get_json("/meshes/default/dataplanes/broken").await.0,
        404
    );
    assert_eq!(
        cp.get_json("/meshes/default/dataplanes").await.1["total"],
        0
    );

    let out = cp
        .cli(
            &["apply", "-f", "-"],
            Some("type: Dataplane\nname: [oops\n"),
        )
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("document 1"));

    // Names Kuma refuses (`.`, `..`, `a_b`): refused, naming the field.
    for name in [".", "..", "a_b", "-web"] {
        let yaml = format!(
            "type: MeshTrafficPermission\nmesh: default\nname: \"{name}\"\nspec:\n  targetRef: {{kind: Mesh}}\n  from:\n  - targetRef: {{kind: Mesh}}\n    default: {{action: Allow}}\n"
        );
        let out = cp.cli(&["apply", "-f", "-"], Some(&yaml)).await;
        assert!(!out.status.success(), "{name:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("RFC 1123"), "{name:?}: {stderr}");
    }
    assert_eq!(
        cp.get_json("/meshes/default/meshtrafficpermissions")
            .await
            .1["total"],
        0
    );

    // Token lifetimes out of bounds, and a workload certificate service
    // that is not a kuma.io/service value: refused, naming the field.
    let refused = |args: Vec<&'static str>, field: &'static str| {
        let cp = &cp;
        async move {
            let out = cp.cli(&args, None).await;
            assert!(!out.status.success(), "{args:?} accepted");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(field), "{args:?}: {stderr}");
        }
    };
    for valid_for in ["0s", "11y", "99999999999999999999y"] {
        let token = "generate dataplane-token --mesh default --name web-1 --valid-for";
        let mut args: Vec<&str> = token.split(' ').collect();
        args.push(valid_for);
        refused(args, "validFor").await;
    }
    for service in ["a/b", "web,URI=spiffe://default/admin", ""] {
        let cert =
            "generate workload-certificate --cert-file /dev/null --key-file /dev/null --service";
        let mut args: Vec<&str> = cert.split(' ').collect();
        args.push(service);
        refused(args, "service").await;
    }

    // The REST API itself refuses a body that does not match its URL.
    let body = serde_json::json!({"type": "Mesh", "name": "other"}).to_string();
    let (status, _) = put(&cp, "/meshes/demo", &body).await;
    assert_eq!(status, 400);
    assert_eq!(cp.get_json("/meshes/demo").await.0, 404);
}

async fn put(cp: &ControlPlane, path: &str, body: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = http::Request::put(format!("{}{path}", cp.api_url()))
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_bad_template_exits_with_the_reason() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(net.host(0), dir.path()).await;
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, NO_SERVICE_TAG).unwrap();
    let mut dp = Dataplane::start_with(
        &cp,
        "broken",
        &["--dataplane-file".into(), file.display().to_string()],
        dir.path(),
    );
    let status = dp
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("koguma-dp should give up on a refused template");
    assert!(!status.success());
    assert!(
        dp.log()
            .contains(r#"networking.inbound[0].tags["kuma.io/service"]: tag has to exist"#),
        "{}",
        dp.log()
    );
    assert_eq!(
        cp.get_json("/meshes/default/dataplanes/broken").await.0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_the_agent_cannot_apply_is_nacked_and_the_old_one_stays() {
    let mesh = WebToBackend::start(1).await;
    let (cp, web, web_ip) = (&mesh.cp, &mesh.web, mesh.web_ip);
    let good_version = web.config_dump().await["version"]
        .as_str()
        .unwrap()
        .to_string();

    // Something else on the host holds the port the new config wants.
    let _squatter = std::net::TcpListener::bind((web_ip, 10009)).unwrap();
    cp.apply(&mesh.web_yaml().outbound(web_ip, 10009, "backend").to_yaml())
        .await;

    let reason = eventually(
        "the NACK to reach the CP",
        Duration::from_secs(10),
        || async {
            cp.insight("web-1").await["lastRejection"]["reason"]
                .as_str()
                .map(str::to_string)
        },
    )
    .await;
    assert!(
        reason.contains(&format!("{web_ip}:10009")) && reason.contains("in use"),
        "{reason}"
    );
    assert_eq!(
        cp.insight("web-1").await["lastAckedVersion"],
        good_version.as_str()
    );
    let table = cp.cli(&["get", "dataplanes"], None).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("in use"), "{table}");

    // The old config is still the one in force, and it still works.
    assert_eq!(web.config_dump().await["version"], good_version.as_str());
    assert_eq!(client::get(&mesh.url("/")).await.unwrap().text(), "b1");
    assert!(
        web.metric("envoy_listener_manager_lds_update_rejected")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refuses_a_cp_it_cannot_verify() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(net.host(0), dir.path()).await;
    // A CA that did not sign the CP's certificate.
    let other_ca = dir.path().join("other-ca.crt");
    let other_key = dir.path().join("other-ca.key");
    let openssl = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=not-the-koguma-ca", "-keyout"])
        .arg(&other_key)
        .arg("-out")
        .arg(&other_ca)
        .output()
        .expect("openssl is needed for this test (apt-get install openssl)");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );

    let yaml = DataplaneYaml::new("web-1", net.host(1)).inbound(8080, 18080, "web", "http");
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, yaml.to_yaml()).unwrap();
    let args = [
        "--dataplane-file".to_string(),
        file.display().to_string(),
        "--ca-cert-file".into(),
        other_ca.display().to_string(),
    ];
    let dp = Dataplane::start_with(&cp, "web-1", &args, dir.path());
    eventually(
        "the agent to log the failed verification",
        Duration::from_secs(10),
        || async { dp.log().contains("invalid peer certificate").then_some(()) },
    )
    .await;
    assert_eq!(dp.ready_status().await, Some(503));
    assert_eq!(
        cp.get_json("/meshes/default/dataplanes/web-1").await.0,
        404,
        "an unverified channel registered a dataplane"
    );
}
