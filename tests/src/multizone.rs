//! A global control plane and its zones, each a real koguma-cp process on
//! an address of its own: the global's sync on :5685, each zone dialling it
//! with a zone token from the global.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::{ControlPlane, eventually};

/// Starts a global CP on `ip` and waits until its API answers.
pub async fn start_global(ip: IpAddr, dir: &Path) -> ControlPlane {
    let args = vec![
        "--mode".into(),
        "global".into(),
        "--kds-address".into(),
        format!("{ip}:5685"),
    ];
    let cp = ControlPlane::spawn_with(ip, dir, &args);
    cp.wait_ready().await;
    cp
}

/// `koguma-cp generate zone-token` against `global`, written to `dir/file`.
pub async fn zone_token(
    global: &ControlPlane,
    zone: &str,
    extra: &[&str],
    dir: &Path,
    file: &str,
) -> PathBuf {
    let mut args = vec!["generate", "zone-token", "--zone", zone];
    args.extend(extra);
    let out = global.cli(&args, None).await;
    assert!(
        out.status.success(),
        "generate zone-token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(file);
    std::fs::write(&path, &out.stdout).expect("write zone token");
    path
}

/// The `run` flags of zone `zone` federated with `global`; `token` None
/// starts it without one.
pub fn zone_args(
    zone: &str,
    global: &ControlPlane,
    token: Option<&Path>,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--zone".into(),
        zone.into(),
        "--global-address".into(),
        format!("grpcs://{}:5685", global.ip),
        "--global-ca-file".into(),
        global.ca_file().display().to_string(),
    ];
    if let Some(t) = token {
        args.push("--zone-token-file".into());
        args.push(t.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The items of a list the CP serves at `path`; none while the list's mesh
/// has not reached `cp` yet (Kuma's 404 under a mesh that does not exist).
pub async fn items(cp: &ControlPlane, path: &str) -> Vec<Value> {
    let (status, body) = cp.get_json(path).await;
    if status == 404 && body["title"] == "Failed to retrieve Mesh" {
        return Vec::new();
    }
    assert_eq!(status, 200, "GET {path}: {body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

/// Waits until `cp` lists a resource named `name` at `path`.
pub async fn wait_for(cp: &ControlPlane, path: &str, name: &str, timeout: Duration) -> Value {
    eventually(
        &format!("{name} at {path} of {}", cp.ip),
        timeout,
        || async {
            items(cp, path)
                .await
                .into_iter()
                .find(|i| i["name"] == name)
        },
    )
    .await
}

/// Instances of `service` in `mesh` that a ZoneIngress offers.
pub fn instances(ingress: &Value, service: &str) -> u64 {
    ingress["availableServices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["mesh"] == "default" && s["tags"]["kuma.io/service"] == service)
        .map(|s| s["instances"].as_u64().unwrap_or(0))
        .sum()
}

/// Waits until the global holds a copy of the dataplane a zone calls `name`.
pub async fn copy_on_global(global: &ControlPlane, name: &str) -> Value {
    eventually(
        &format!("{name} on the global"),
        Duration::from_secs(5),
        || async {
            items(global, "/meshes/default/dataplanes")
                .await
                .into_iter()
                .find(|d| d["labels"]["kuma.io/display-name"] == name)
        },
    )
    .await
}

/// Waits until the global holds exactly `want` (their zone's names, sorted)
/// of `zone`'s dataplanes.
pub async fn wait_zone_dataplanes(
    global: &ControlPlane,
    zone: &str,
    want: &[&str],
    timeout: Duration,
) {
    eventually(
        &format!("{zone}'s dataplanes on the global to be {want:?}"),
        timeout,
        || async {
            let mut names: Vec<String> = items(global, "/meshes/default/dataplanes")
                .await
                .into_iter()
                .filter(|d| d["labels"]["kuma.io/zone"] == zone)
                .map(|d| {
                    d["labels"]["kuma.io/display-name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            names.sort();
            (names == want).then_some(())
        },
    )
    .await
}

/// A ZoneIngress resource listening (and advertised) on `ip:port`.
pub fn ingress_yaml(name: &str, ip: IpAddr, port: u16) -> String {
    format!(
        "type: ZoneIngress\nname: {name}\nnetworking:\n  address: {ip}\n  port: {port}\n  advertisedAddress: {ip}\n  advertisedPort: {port}\n"
    )
}

/// A ZoneEgress resource listening on `ip:port`.
pub fn egress_yaml(name: &str, ip: IpAddr, port: u16) -> String {
    format!("type: ZoneEgress\nname: {name}\nnetworking:\n  address: {ip}\n  port: {port}\n")
}

/// `koguma-dp run --proxy-type kind` (ingress or egress) for `yaml`, with
/// `token` (a zone token).
pub fn start_zone_proxy(
    cp: &ControlPlane,
    kind: &str,
    name: &str,
    yaml: &str,
    token: &Path,
    dir: &Path,
) -> crate::Dataplane {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("write zone proxy file");
    let args: Vec<String> = [
        "--proxy-type",
        kind,
        "--dataplane-file",
        &file.display().to_string(),
        "--dataplane-token-file",
        &token.display().to_string(),
        "--drain-time",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    crate::Dataplane::start_with(cp, name, &args, dir)
}
