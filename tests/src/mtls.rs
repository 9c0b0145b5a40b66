//! Mesh mTLS for tests: turning it on, permissions, and clients from
//! outside the mesh (curl and openssl with certificates of their own).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::ControlPlane;

/// The default mesh with the builtin CA; `mode` STRICT or PERMISSIVE;
/// `extra`: more top-level YAML (e.g. `routing:`).
pub fn mesh_yaml(mode: &str, cert_lifetime: &str, extra: &str) -> String {
    format!(
        "type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
    mode: {mode}
    dpCert:
      rotation:
        expiration: {cert_lifetime}
{extra}"
    )
}

/// Enables the builtin CA on the default mesh; `mode` STRICT or PERMISSIVE.
pub async fn enable(cp: &ControlPlane, mode: &str, cert_lifetime: &str) {
    cp.apply(&mesh_yaml(mode, cert_lifetime, "")).await;
}

/// A MeshTrafficPermission on every dataplane, with `from` rules given as
/// (targetRef YAML, action).
pub async fn permit(cp: &ControlPlane, name: &str, from: &[(&str, &str)]) {
    let mut y = format!(
        "type: MeshTrafficPermission\nmesh: default\nname: {name}\nspec:\n  targetRef:\n    kind: Mesh\n  from:\n"
    );
    for (target, action) in from {
        y.push_str(&format!(
            "  - targetRef: {target}\n    default:\n      action: {action}\n"
        ));
    }
    cp.apply(&y).await;
}

pub async fn forbid_nothing(cp: &ControlPlane) {
    permit(cp, "allow-all", &[("{kind: Mesh}", "Allow")]).await;
}

/// A workload certificate from the mesh CA for `service` (key made locally
/// by the CLI): (cert, key, ca) paths.
pub async fn workload_cert(
    cp: &ControlPlane,
    service: &str,
    dir: &Path,
) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key, ca) = (
        dir.join(format!("{service}.crt")),
        dir.join(format!("{service}.key")),
        dir.join("mesh-ca.crt"),
    );
    let out = cp
        .cli(
            &[
                "generate",
                "workload-certificate",
                "--service",
                service,
                "--cert-file",
                &cert.display().to_string(),
                "--key-file",
                &key.display().to_string(),
                "--ca-file",
                &ca.display().to_string(),
            ],
            None,
        )
        .await;
    assert!(
        out.status.success(),
        "generate workload-certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key, ca)
}

/// A self-signed certificate that claims `uri`, from a CA the mesh does
/// not know: (cert, key).
pub fn foreign_cert(uri: &str, dir: &Path) -> (PathBuf, PathBuf) {
    self_signed(dir, "foreign", &[&format!("subjectAltName=URI:{uri}")])
}

/// A self-signed ECDSA P-256 certificate (PKCS#8 key) named `cn`, with
/// the X.509 extensions `exts` (`openssl req -addext`): (cert, key) files.
pub fn self_signed(dir: &Path, cn: &str, exts: &[&str]) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    let mut cmd = std::process::Command::new("openssl");
    cmd.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
    ])
    .args(["-nodes", "-days", "1", "-subj", &format!("/CN={cn}")])
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&cert);
    for ext in exts {
        cmd.args(["-addext", ext]);
    }
    let out = cmd.output().expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// curl over HTTPS without ALPN (a Strict inbound accepts only `kuma` when
/// ALPN is offered) and without checking the server (mesh certificates name
/// no host): what is under test is the server's check of the client.
pub async fn curl_tls(url: &str, cert: Option<(&Path, &Path)>) -> Output {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "-k",
        "--no-alpn",
        "--max-time",
        "5",
        "-w",
        "\n%{http_code}",
    ]);
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    cmd.arg(url).output().await.expect("run curl")
}

/// (status, body) from curl's `-w "\n%{http_code}"` output; status 0 when
/// no HTTP response came back.
pub fn curl_reply(out: &Output) -> (u16, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// What `openssl s_client` says of the certificate it was shown.
pub async fn openssl_peer(ip: IpAddr, port: u16, sni: &str) -> String {
    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("{ip}:{port}"),
            "-servername",
            sni,
            "-alpn",
            "kuma",
            "-showcerts",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("BEGIN CERTIFICATE") {
        // The SANs of the leaf it was shown.
        let pem_start = text.find("-----BEGIN CERTIFICATE-----").unwrap_or(0);
        let pem_end = text
            .find("-----END CERTIFICATE-----")
            .map_or(text.len(), |e| e + 25);
        let mut x509 = tokio::process::Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl x509");
        use tokio::io::AsyncWriteExt;
        let mut stdin = x509.stdin.take().expect("stdin");
        stdin
            .write_all(&text.as_bytes()[pem_start..pem_end])
            .await
            .expect("write pem");
        drop(stdin);
        let out = x509.wait_with_output().await.expect("x509");
        return String::from_utf8_lossy(&out.stdout).to_string();
    }
    text
}
