//! Dataplane tokens: an agent registers only the dataplane its token names,
//! and an expired, forged or missing token registers nothing.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use koguma_e2e::dp::{DataplaneYaml, NO_TOKEN};
use koguma_e2e::{ControlPlane, Dataplane, TestNet};

/// Starts backend-1 with `token_args` and expects a refusal naming `why`.
async fn refused(cp: &ControlPlane, dir: &Path, token_args: &[String], why: &str) {
    let yaml = DataplaneYaml::new("backend-1", cp.ip).inbound(8081, 18081, "backend", "http");
    let file = dir.join("backend-1.yaml");
    std::fs::write(&file, yaml.to_yaml()).unwrap();
    let mut args = vec!["--dataplane-file".to_string(), file.display().to_string()];
    args.extend(token_args.iter().cloned());
    let mut dp = Dataplane::start_with(cp, "backend-1", &args, dir);
    let status = dp.wait_exit(Duration::from_secs(15)).await;
    let log = dp.log();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(log.contains("not allowed to register"), "{log}");
    assert!(log.contains(why), "expected {why:?} in: {log}");
    assert_eq!(
        cp.get_json("/meshes/default/dataplanes/backend-1").await.0,
        404,
        "a refused dataplane was registered"
    );
}

fn token_arg(path: &Path) -> Vec<String> {
    vec![
        "--dataplane-token-file".to_string(),
        path.display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_valid_token_for_this_dataplane_registers_it() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = ControlPlane::start(net.host(0), d).await;

    // web's token cannot register backend.
    let web = cp.token_file("web-1", &[], d, "web.token");
    refused(&cp, d, &token_arg(&web), r#"name "web-1", not "backend-1""#).await;

    // No token at all.
    refused(
        &cp,
        d,
        &[NO_TOKEN.to_string()],
        "no dataplane token was presented",
    )
    .await;

    // Expired.
    let short = cp.token_file("backend-1", &["--valid-for", "1s"], d, "short.token");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    refused(&cp, d, &token_arg(&short), "expired").await;

    // Forged: web's token with the name changed, signature kept.
    let text = std::fs::read_to_string(&web).unwrap();
    let parts: Vec<&str> = text.trim().split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims["Name"] = "backend-1".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string()),
        parts[2]
    );
    let forged_path = d.join("forged.token");
    std::fs::write(&forged_path, forged).unwrap();
    refused(&cp, d, &token_arg(&forged_path), "signature is not valid").await;

    // A token bound to another service's tag.
    let tagged = cp.token_file("", &["--tag", "kuma.io/service=web"], d, "tagged.token");
    refused(
        &cp,
        d,
        &token_arg(&tagged),
        r#"allows tag "kuma.io/service""#,
    )
    .await;

    // The right token registers it.
    let good = cp.token_file(
        "backend-1",
        &["--tag", "kuma.io/service=backend"],
        d,
        "good.token",
    );
    let file = d.join("backend-1.yaml");
    let mut args = vec!["--dataplane-file".to_string(), file.display().to_string()];
    args.extend(token_arg(&good));
    let dp = Dataplane::start_with(&cp, "backend-1", &args, d);
    dp.wait_ready().await;
    assert_eq!(
        cp.get_json("/meshes/default/dataplanes/backend-1").await.0,
        200
    );
}
