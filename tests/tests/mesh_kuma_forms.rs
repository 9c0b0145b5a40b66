//! The Mesh as Kuma users write it: a `provided` CA from `Secret`s signs
//! the sidecars' certificates (and a bad one is refused, naming the field,
//! with the old CA left in force); observability backends validated as
//! Kuma validates them; zone egress without mTLS refused; membership
//! constraints enforced when a dataplane joins.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use koguma_e2e::{WebToBackend, client, eventually, mtls};

/// A CA of the test's own, named `cn`; `ca` false makes a certificate
/// that is not a CA's: (cert, key) PEM.
fn make_ca(dir: &Path, cn: &str, ca: bool) -> (String, String) {
    let constraints = if ca {
        "basicConstraints=critical,CA:TRUE"
    } else {
        "basicConstraints=critical,CA:FALSE"
    };
    let usage = "keyUsage=critical,keyCertSign,cRLSign,digitalSignature";
    let (cert, key) = mtls::self_signed(dir, cn, &[constraints, usage]);
    (
        std::fs::read_to_string(cert).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    )
}

fn secret(name: &str, pem: &str) -> String {
    let data = base64::engine::general_purpose::STANDARD.encode(pem);
    format!("---\ntype: Secret\nmesh: default\nname: {name}\ndata: {data}\n")
}

fn provided_mesh(cert: &str, key: &str) -> String {
    format!(
        "type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: provided
    mode: STRICT
    conf:
      cert:
        secret: {cert}
      key:
        secret: {key}
"
    )
}

/// The issuer line `openssl s_client` shows for the certificate at
/// `ip:port`, connecting with the workload certificate `client`.
async fn issuer_of(ip: std::net::IpAddr, port: u16, client: &(PathBuf, PathBuf)) -> String {
    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("{ip}:{port}"),
            "-alpn",
            "kuma",
        ])
        .arg("-cert")
        .arg(&client.0)
        .arg("-key")
        .arg(&client.1)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.trim_start().starts_with("i:"))
        .unwrap_or("")
        .to_string()
}

async fn refused(m: &WebToBackend, yaml: &str) -> String {
    let out = m.cp.cli(&["apply", "-f", "-"], Some(yaml)).await;
    assert!(!out.status.success(), "accepted:\n{yaml}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provided_ca_signs_the_sidecars_and_a_bad_one_is_refused() {
    let m = WebToBackend::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_ca(dir.path(), "Provided Root 7", true);
    let mut yaml = secret("root-cert", &cert);
    yaml.push_str(&secret("root-key", &key));
    m.cp.apply(&yaml).await;
    m.cp.apply(&provided_mesh("root-cert", "root-key")).await;
    mtls::forbid_nothing(&m.cp).await;
    eventually(
        "web → backend over mTLS",
        Duration::from_secs(15),
        || async {
            let r = client::get(&m.url("/")).await.ok()?;
            (r.status == 200 && r.text() == "b1").then_some(())
        },
    )
    .await;
    let (client_cert, client_key, _) = mtls::workload_cert(&m.cp, "probe", dir.path()).await;
    let client = (client_cert, client_key);
    let issuer = issuer_of(m.net.host(2), 8081, &client).await;
    assert!(
        issuer.contains("Provided Root 7"),
        "backend's certificate: {issuer}"
    );

    // A key that is not the certificate's, a certificate that is not a
    // CA's: refused, naming the field; the CA in force stays.
    let (_, other_key) = make_ca(dir.path(), "Other", true);
    let (leaf, leaf_key) = make_ca(dir.path(), "Not A CA", false);
    let mut yaml = secret("other-key", &other_key);
    yaml.push_str(&secret("leaf-cert", &leaf));
    yaml.push_str(&secret("leaf-key", &leaf_key));
    m.cp.apply(&yaml).await;
    let err = refused(&m, &provided_mesh("root-cert", "other-key")).await;
    assert!(
        err.contains("mtls.backends[0].conf.key")
            && err.contains("does not belong to the certificate"),
        "{err}"
    );
    let err = refused(&m, &provided_mesh("leaf-cert", "leaf-key")).await;
    assert!(
        err.contains("mtls.backends[0].conf.cert") && err.contains("is not a CA certificate"),
        "{err}"
    );
    let err = refused(&m, &provided_mesh("no-such-secret", "root-key")).await;
    assert!(
        err.contains("secret \"no-such-secret\" does not exist"),
        "{err}"
    );
    let r = client::get(&m.url("/")).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "b1"));
    assert!(
        issuer_of(m.net.host(2), 8081, &client)
            .await
            .contains("Provided Root 7")
    );

    // Secrets in Kuma's shape at Kuma's path.
    let (status, listed) = m.cp.get_json("/meshes/default/secrets").await;
    assert_eq!(status, 200);
    assert!(listed["total"].as_u64().unwrap() >= 5, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_settings_are_checked_as_kuma_checks_them() {
    let m = WebToBackend::start(0).await;
    let err = refused(
        &m,
        "type: Mesh
name: traced
tracing:
  defaultBackend: zipkin-1
  backends:
  - name: zipkin-1
    type: zipkin
    conf:
      url: not a url
",
    )
    .await;
    assert!(
        err.contains("tracing.backends[0].config.url: invalid URL"),
        "{err}"
    );
    let err = refused(
        &m,
        "type: Mesh\nname: egress\nrouting:\n  zoneEgress: true\n",
    )
    .await;
    assert!(
        err.contains("mtls: has to be set when zoneEgress enabled"),
        "{err}"
    );
    // Valid backends are taken as Kuma takes them.
    m.cp.apply(
        "type: Mesh
name: observed
logging:
  defaultBackend: file-1
  backends:
  - name: file-1
    type: file
    conf:
      path: /tmp/access.log
tracing:
  defaultBackend: zipkin-1
  backends:
  - name: zipkin-1
    type: zipkin
    sampling: 50
    conf:
      url: http://zipkin.local:9411/api/v2/spans
metrics:
  enabledBackend: prom-1
  backends:
  - name: prom-1
    type: prometheus
    conf:
      port: 5670
      path: /metrics
",
    )
    .await;

    // Membership constraints: a dataplane joins only if its tags fit.
    m.cp.apply(
        "type: Mesh
name: guarded
constraints:
  dataplaneProxy:
    requirements:
    - tags:
        team: '*'
    restrictions:
    - tags:
        team: intruders
",
    )
    .await;
    let dp = |name: &str, team: &str| {
        format!(
            "type: Dataplane\nmesh: guarded\nname: {name}\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  - port: 8080\n    servicePort: 18080\n    tags:\n      kuma.io/service: svc\n{team}"
        )
    };
    let err = refused(&m, &dp("no-team", "")).await;
    assert!(
        err.contains("dataplane cannot be a member of mesh \"guarded\"")
            && err.contains("do not fulfill any requirement"),
        "{err}"
    );
    let err = refused(&m, &dp("intruder", "      team: intruders\n")).await;
    assert!(err.contains("match the restricted tags"), "{err}");
    m.cp.apply(&dp("payments", "      team: payments\n")).await;
}
