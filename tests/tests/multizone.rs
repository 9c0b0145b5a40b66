//! Multi-zone: a global and two zone CPs, real processes on loopback. What
//! is applied on the global reaches both zones (and is measured); what
//! zones register reaches the global, and other zones through zone
//! ingresses; each resource changes only where it originates; zones keep
//! serving while the global is away and resync after; a zone that restarts
//! empty comes back without duplicates and without stale resources.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::multizone::{
    copy_on_global, instances, items, start_global, wait_for, wait_zone_dataplanes, zone_args,
    zone_token,
};
use koguma_e2e::{ControlPlane, Dataplane, TestNet, apps, client, eventually, mtls};

const PERMISSION: &str = "type: MeshTrafficPermission
mesh: default
name: allow-all
spec:
  targetRef: {kind: Mesh}
  from:
  - targetRef: {kind: Mesh}
    default: {action: Allow}
";

fn ingress(ip: std::net::IpAddr) -> String {
    format!(
        "type: ZoneIngress\nname: ingress-1\nnetworking:\n  address: {ip}\n  port: 10001\n  advertisedAddress: {ip}\n  advertisedPort: 10001\n"
    )
}

/// A dataplane's insight as `cp` reports it.
async fn insight_on(cp: &ControlPlane, name: &str) -> serde_json::Value {
    let path = format!("/meshes/default/dataplanes+insights/{name}");
    cp.get_json(&path).await.1["dataplaneInsight"].clone()
}

/// The mesh CA a CP signs workload certificates with, as a client gets it.
async fn ca(cp: &ControlPlane, dir: &std::path::Path) -> String {
    let file = |what: &str| {
        dir.join(format!("{what}-{}.pem", cp.ip))
            .display()
            .to_string()
    };
    let (c, k, ca) = (file("cert"), file("key"), file("ca"));
    let args = [
        "generate",
        "workload-certificate",
        "--service",
        "probe",
        "--cert-file",
        &c,
        "--key-file",
        &k,
        "--ca-file",
        &ca,
    ];
    let out = cp.cli(&args, None).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(ca).expect("CA file")
}

async fn zone_cp(
    global: &ControlPlane,
    zone: &str,
    ip: std::net::IpAddr,
    root: &std::path::Path,
    extra: &[&str],
) -> ControlPlane {
    let dir = root.join(zone);
    std::fs::create_dir_all(&dir).expect("zone dir");
    let token = zone_token(global, zone, &[], root, &format!("{zone}.token")).await;
    let cp = ControlPlane::spawn_with(ip, &dir, &zone_args(zone, global, Some(&token), extra));
    cp.wait_ready().await;
    cp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_across_a_global_and_two_zones() {
    let net = TestNet::new();
    let root = tempfile::tempdir().expect("temp dir");
    let gdir = root.path().join("global");
    std::fs::create_dir_all(&gdir).unwrap();
    let mut global = start_global(net.host(0), &gdir).await;
    let zone1 = zone_cp(&global, "zone-1", net.host(1), root.path(), &[]).await;
    // zone-2 keeps nothing across restarts: what it had must come back
    // from its agents and the global, with nothing stale left behind.
    let mut zone2 = zone_cp(
        &global,
        "zone-2",
        net.host(2),
        root.path(),
        &["--store", "memory"],
    )
    .await;

    // Global -> zones: the default mesh, then mTLS and a permission, timed.
    for z in [&zone1, &zone2] {
        wait_for(z, "/meshes", "default", Duration::from_secs(10)).await;
    }
    mtls::enable(&global, "STRICT", "1h").await;
    let applied = Instant::now();
    global.apply(PERMISSION).await;
    let mut took = Vec::new();
    for z in [&zone1, &zone2] {
        let mtp = wait_for(
            z,
            "/meshes/default/meshtrafficpermissions",
            "allow-all",
            Duration::from_secs(5),
        )
        .await;
        took.push(applied.elapsed());
        assert_eq!(mtp["labels"]["kuma.io/origin"], "global", "{mtp}");
    }
    println!(
        "propagation global -> zones: zone-1 {:?}, zone-2 {:?} (apply returned to seen on the zone's API)",
        took[0], took[1]
    );

    // Dataplanes in zone-1 (web calling backend) and zone-2 (backend).
    let web_ip = net.host(3);
    let web_yaml = DataplaneYaml::new("web-1", web_ip)
        .inbound(8080, 18080, "web", "http")
        .outbound(web_ip, 10001, "backend");
    let _app1 = apps::http(SocketAddr::new(net.host(4), 18081), "b1").await;
    let _app2 = apps::http(SocketAddr::new(net.host(5), 18081), "b2").await;
    let backend = |i: u8| {
        DataplaneYaml::new(&format!("backend-{i}"), net.host(3 + i))
            .inbound(8081, 18081, "backend", "http")
    };
    let web = Dataplane::start(&zone1, &web_yaml, root.path());
    let _backend1 = Dataplane::start(&zone1, &backend(1), root.path());
    let backend2 = Dataplane::start(&zone2, &backend(2), root.path());
    web.wait_ready().await;
    backend2.wait_ready().await;
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 1)
        .await;
    let http = client::Http1::default();
    let url = format!("http://{web_ip}:10001/");
    let counts = client::tally(&http, &url, 20).await;
    assert_eq!(
        counts.get("b1"),
        Some(&20),
        "zone-1 traffic under the global's mTLS and permission: {counts:?}"
    );

    // Every zone signs under the global's CA.
    let global_ca = ca(&global, root.path()).await;
    assert_eq!(
        ca(&zone1, root.path()).await,
        global_ca,
        "zone-1 has its own CA"
    );
    assert_eq!(
        ca(&zone2, root.path()).await,
        global_ca,
        "zone-2 has its own CA"
    );

    // Zone -> global: dataplanes with kuma.io/zone, under hashed names.
    let on_global = copy_on_global(&global, "web-1").await;
    assert_eq!(on_global["labels"]["kuma.io/zone"], "zone-1", "{on_global}");
    assert_eq!(on_global["labels"]["kuma.io/origin"], "zone", "{on_global}");
    assert_eq!(
        on_global["networking"]["inbound"][0]["tags"]["kuma.io/zone"], "zone-1",
        "{on_global}"
    );
    assert_ne!(
        on_global["name"], "web-1",
        "zone copies get hashed names on the global"
    );
    // ...with their insights, as their zone reports them.
    let web_on_global = on_global["name"].as_str().unwrap().to_string();
    eventually(
        "web-1 online on the global",
        Duration::from_secs(5),
        || async {
            let i = insight_on(&global, &web_on_global).await;
            (i["online"] == true && i["lastAckedVersion"].is_string()).then_some(())
        },
    )
    .await;

    // Zone ingress of zone-1: its availableServices computed by zone-1,
    // seen by zone-2 through the global, and kept current.
    zone1.apply(&ingress(net.host(6))).await;
    let seen = |want: u64| {
        let zone2 = &zone2;
        async move {
            eventually(
                &format!("zone-2 to see {want} backend instance(s) in zone-1"),
                Duration::from_secs(10),
                || async {
                    items(zone2, "/zoneingresses")
                        .await
                        .into_iter()
                        .find(|z| z["zone"] == "zone-1" && instances(z, "backend") == want)
                },
            )
            .await
        }
    };
    let zi = seen(1).await;
    assert_eq!(instances(&zi, "web"), 1, "{zi}");
    assert_eq!(zi["labels"]["kuma.io/zone"], "zone-1", "{zi}");
    zone1.apply(&backend(9).to_yaml()).await;
    seen(2).await;

    // Changed only where it originates: 400 with the place to go.
    let refused = |out: std::process::Output, want: &str| {
        assert!(!out.status.success(), "the change was accepted");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains(want), "{err}");
    };
    refused(
        zone1
            .cli(
                &["apply", "-f", "-"],
                Some(&PERMISSION.replace("allow-all", "local")),
            )
            .await,
        "managed by the global control plane",
    );
    refused(
        zone1
            .cli(&["delete", "meshtrafficpermission", "allow-all"], None)
            .await,
        "managed by the global control plane",
    );
    refused(
        global
            .cli(&["apply", "-f", "-"], Some(&backend(8).to_yaml()))
            .await,
        "made on the zone control plane",
    );
    let zone2_copy = items(&zone2, "/zoneingresses")
        .await
        .into_iter()
        .find(|z| z["zone"] == "zone-1")
        .unwrap();
    refused(
        zone2
            .cli(
                &[
                    "delete",
                    "zone-ingress",
                    zone2_copy["name"].as_str().unwrap(),
                ],
                None,
            )
            .await,
        "cannot be changed",
    );

    // Zones, online, on the global.
    let table =
        String::from_utf8_lossy(&global.cli(&["get", "zones"], None).await.stdout).to_string();
    for z in ["zone-1", "zone-2"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(z) && l.contains("Online")),
            "{table}"
        );
    }

    // The global goes away: zone-1 keeps serving and taking changes...
    global.kill();
    let counts = client::tally(&http, &url, 20).await;
    assert_eq!(
        counts.get("b1"),
        Some(&20),
        "zone-1 traffic with the global down: {counts:?}"
    );
    zone1.apply(&backend(10).to_yaml()).await;
    // ...and the global, back, catches up without duplicates.
    global.restart().await;
    let zone1_dps = ["backend-1", "backend-10", "backend-9", "web-1"];
    wait_zone_dataplanes(&global, "zone-1", &zone1_dps, Duration::from_secs(15)).await;

    // zone-2 goes away: the global keeps its resources, marked offline.
    zone2.apply(&backend(7).to_yaml()).await;
    wait_for(&global, "/zones", "zone-2", Duration::from_secs(5)).await;
    copy_on_global(&global, "backend-7").await;
    zone2.kill();
    eventually(
        "zone-2 offline on the global",
        Duration::from_secs(10),
        || async {
            let table = String::from_utf8_lossy(&global.cli(&["get", "zones"], None).await.stdout)
                .to_string();
            table
                .lines()
                .any(|l| l.starts_with("zone-2") && l.contains("Offline"))
                .then_some(())
        },
    )
    .await;
    let (zone2_dps, wait) = (["backend-2", "backend-7"], Duration::from_secs(20));
    wait_zone_dataplanes(&global, "zone-2", &zone2_dps, wait).await;
    let b2 = copy_on_global(&global, "backend-2").await;
    let i = insight_on(&global, b2["name"].as_str().unwrap()).await;
    assert_eq!(
        i["online"], false,
        "a dataplane of an offline zone shows offline: {i}"
    );
    assert!(
        i["lastAckedVersion"].is_string(),
        "its last report stays: {i}"
    );
    // Back with an empty store: backend-2's agent registers again, the
    // API-made backend-7 is gone, and the global follows.
    zone2.restart().await;
    wait_zone_dataplanes(&global, "zone-2", &["backend-2"], wait).await;
    wait_for(
        &zone2,
        "/meshes/default/meshtrafficpermissions",
        "allow-all",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        ca(&zone2, root.path()).await,
        global_ca,
        "zone-2 after its restart"
    );
}

/// Who issues a token, for which zone, with which flags.
type TokenFrom<'a> = (&'a ControlPlane, &'a str, &'a [&'a str]);

/// A zone CP the global must refuse: it exits non-zero, before anything is
/// synced, with the reason in its log.
async fn refused_zone(
    global: &ControlPlane,
    zone: &str,
    ip: std::net::IpAddr,
    dir: &std::path::Path,
    token: Option<&std::path::Path>,
    reason: &str,
) {
    std::fs::create_dir_all(dir).expect("zone dir");
    let mut cp = ControlPlane::spawn_with(ip, dir, &zone_args(zone, global, token, &[]));
    let status = cp.wait_exit(Duration::from_secs(15)).await;
    let log = cp.log();
    let status = status.unwrap_or_else(|| panic!("zone {zone} was not refused; its log:\n{log}"));
    assert!(!status.success(), "zone {zone} exited with {status}");
    assert!(
        log.contains("refused this zone") && log.contains(reason),
        "zone {zone}'s log lacks {reason:?}:\n{log}"
    );
    assert!(
        !items(global, "/zones")
            .await
            .iter()
            .any(|z| z["name"] == zone),
        "the global recorded refused zone {zone}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_without_a_valid_token_and_dataplanes_dialling_the_global_are_refused() {
    let net = TestNet::new();
    let root = tempfile::tempdir().expect("temp dir");
    let dir = |d: &str| root.path().join(d);
    std::fs::create_dir_all(dir("global")).unwrap();
    std::fs::create_dir_all(dir("elsewhere")).unwrap();
    let global = start_global(net.host(0), &dir("global")).await;
    // Another global, whose tokens this one must not take.
    let elsewhere = start_global(net.host(1), &dir("elsewhere")).await;

    // (zone, whose token: the global that issues it, for which zone, with
    // which flags; what the zone's log must say)
    let cases: [(&str, Option<TokenFrom>, &str); 5] = [
        ("zone-a", None, "no zone token was presented"),
        (
            "zone-b",
            Some((&elsewhere, "zone-b", &[])),
            "signature is not valid",
        ),
        (
            "zone-c",
            Some((&global, "zone-c", &["--valid-for", "1s"])),
            "expired",
        ),
        (
            "zone-d",
            Some((&global, "zone-e", &[])),
            "for zone \"zone-e\", not \"zone-d\"",
        ),
        (
            "zone-f",
            Some((&global, "zone-f", &["--scope", "ingress"])),
            "does not include \"cp\"",
        ),
    ];
    let mut tokens = Vec::new();
    for (zone, token, _) in &cases {
        tokens.push(match token {
            Some((issuer, for_zone, flags)) => Some(
                zone_token(
                    issuer,
                    for_zone,
                    flags,
                    root.path(),
                    &format!("{zone}.token"),
                )
                .await,
            ),
            None => None,
        });
    }
    tokio::time::sleep(Duration::from_millis(1100)).await; // zone-c's expires
    for (i, ((zone, _, reason), token)) in cases.iter().zip(&tokens).enumerate() {
        let host = net.host(2 + i as u8);
        refused_zone(&global, zone, host, &dir(zone), token.as_deref(), reason).await;
    }

    // A standalone CP signs zone tokens for its own zone proxies (a
    // federated zone refuses: see cross_zone.rs).
    std::fs::create_dir_all(dir("standalone")).unwrap();
    let standalone = ControlPlane::start(net.host(7), &dir("standalone")).await;
    let out = standalone
        .cli(&["generate", "zone-token", "--zone", "default"], None)
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split('.')
            .count(),
        3
    );

    // A dataplane that dials the global is told to go to its zone.
    let yaml = DataplaneYaml::new("lost-1", net.host(8)).inbound(8080, 18080, "lost", "http");
    let mut dp = Dataplane::start(&global, &yaml, root.path());
    let status = dp.wait_exit(Duration::from_secs(15)).await;
    let log = dp.log();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the dataplane kept running:\n{log}"
    );
    assert!(
        log.contains("global control plane: it serves no dataplanes"),
        "{log}"
    );
    assert!(
        items(&global, "/meshes/default/dataplanes")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_whose_token_expires_while_running_keeps_serving_until_renewed() {
    let net = TestNet::new();
    let root = tempfile::tempdir().expect("temp dir");
    let gdir = root.path().join("global");
    let zdir = root.path().join("zone-1");
    std::fs::create_dir_all(&gdir).unwrap();
    std::fs::create_dir_all(&zdir).unwrap();
    let mut global = start_global(net.host(0), &gdir).await;
    let token = zone_token(
        &global,
        "zone-1",
        &["--valid-for", "2s"],
        root.path(),
        "zone-1.token",
    )
    .await;
    let mut zone = ControlPlane::spawn_with(
        net.host(1),
        &zdir,
        &zone_args("zone-1", &global, Some(&token), &[]),
    );
    zone.wait_ready().await;
    wait_for(&zone, "/meshes", "default", Duration::from_secs(10)).await;

    // The token expires while the global is away: back, the global
    // refuses the zone, which says so and keeps serving.
    global.kill();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    global.restart().await;
    eventually(
        "the zone to log the refusal",
        Duration::from_secs(15),
        || async {
            zone.log()
                .contains("the global refuses this zone now")
                .then_some(())
        },
    )
    .await;
    assert!(
        zone.wait_exit(Duration::from_millis(500)).await.is_none(),
        "the zone CP exited:\n{}",
        zone.log()
    );
    assert_eq!(zone.get_json("/meshes/default").await.0, 200);

    // A renewed token in the same file: the zone syncs again, no restart.
    let renewed = zone_token(&global, "zone-1", &[], root.path(), "renewed.token").await;
    std::fs::copy(&renewed, &token).unwrap();
    global.apply(PERMISSION).await;
    wait_for(
        &zone,
        "/meshes/default/meshtrafficpermissions",
        "allow-all",
        Duration::from_secs(15),
    )
    .await;
}
