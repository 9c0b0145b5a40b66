//! Cross-zone traffic: a global, zone-a and zone-b as real koguma-cp
//! processes, a zone ingress in zone-b as a real `koguma-dp --proxy-type
//! ingress`, and sidecars on both sides. web in zone-a calls backend; the
//! split follows instance counts, the ingress routes by SNI without
//! terminating TLS, locality keeps traffic local while it can.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::multizone::{
    ingress_yaml, instances, items, start_global, start_zone_proxy, zone_args, zone_token,
};
use koguma_e2e::{ControlPlane, Dataplane, TestNet, apps, client, eventually, external, mtls};

struct Zones {
    net: TestNet,
    root: tempfile::TempDir,
    global: ControlPlane,
    a: ControlPlane,
    b: ControlPlane,
    token_a: std::path::PathBuf,
    token_b: std::path::PathBuf,
}

async fn zone_cp(
    global: &ControlPlane,
    zone: &str,
    ip: IpAddr,
    root: &Path,
) -> (ControlPlane, std::path::PathBuf) {
    let dir = root.join(zone);
    std::fs::create_dir_all(&dir).expect("zone dir");
    let token = zone_token(global, zone, &[], root, &format!("{zone}.token")).await;
    let cp = ControlPlane::spawn_with(ip, &dir, &zone_args(zone, global, Some(&token), &[]));
    cp.wait_ready().await;
    (cp, token)
}

/// A global (mTLS on, everyone allowed) and two zones that have its mesh.
async fn zones() -> Zones {
    let net = TestNet::new();
    let root = tempfile::tempdir().expect("temp dir");
    let gdir = root.path().join("global");
    std::fs::create_dir_all(&gdir).unwrap();
    let global = start_global(net.host(0), &gdir).await;
    mtls::enable(&global, "STRICT", "1h").await;
    mtls::forbid_nothing(&global).await;
    let (a, token_a) = zone_cp(&global, "zone-a", net.host(1), root.path()).await;
    let (b, token_b) = zone_cp(&global, "zone-b", net.host(2), root.path()).await;
    for z in [&a, &b] {
        eventually(
            "the permission on the zone",
            Duration::from_secs(10),
            || async {
                items(z, "/meshes/default/meshtrafficpermissions")
                    .await
                    .into_iter()
                    .next()
            },
        )
        .await;
    }
    Zones {
        net,
        root,
        global,
        a,
        b,
        token_a,
        token_b,
    }
}

/// zone-b's ingress, a koguma-dp on host 6, port 10001.
fn start_ingress_b(z: &Zones) -> Dataplane {
    let yaml = ingress_yaml("ingress-b", z.net.host(6), 10001);
    start_zone_proxy(
        &z.b,
        "ingress",
        "ingress-b",
        &yaml,
        &z.token_b,
        z.root.path(),
    )
}

/// web in zone-a, calling backend on `ip:10001`.
fn start_web(z: &Zones, ip: IpAddr) -> Dataplane {
    let yaml = DataplaneYaml::new("web-1", ip)
        .inbound(8080, 18080, "web", "http")
        .outbound(ip, 10001, "backend");
    Dataplane::start(&z.a, &yaml, z.root.path())
}

fn backend(name: &str, ip: IpAddr) -> DataplaneYaml {
    DataplaneYaml::new(name, ip).inbound(8081, 18081, "backend", "http")
}

/// Waits until zone-a sees `want` backend instances behind zone-b's ingress.
async fn zone_a_sees(z: &Zones, want: u64) {
    eventually(
        &format!("zone-a to see {want} backend instance(s) in zone-b"),
        Duration::from_secs(15),
        || async {
            items(&z.a, "/zoneingresses")
                .await
                .into_iter()
                .find(|i| i["zone"] == "zone-b" && instances(i, "backend") == want)
        },
    )
    .await;
}

fn share(counts: &std::collections::BTreeMap<String, usize>, ids: &[&str]) -> usize {
    ids.iter()
        .map(|id| counts.get(*id).copied().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_splits_by_instances_across_zones_through_an_ingress_that_terminates_nothing() {
    let z = zones().await;
    let (net, dir) = (&z.net, z.root.path());
    let web_ip = net.host(3);
    let web = start_web(&z, web_ip);
    let _apps = [
        apps::http(SocketAddr::new(net.host(4), 18081), "a1").await,
        apps::http(SocketAddr::new(net.host(5), 18081), "a2").await,
        apps::http(SocketAddr::new(net.host(7), 18081), "b1").await,
    ];
    let b1 = Dataplane::start(&z.b, &backend("backend-b1", net.host(7)), dir);
    let ingress_ip = net.host(6);
    let ingress = start_ingress_b(&z);
    for dp in [&web, &b1, &ingress] {
        dp.wait_ready().await;
    }
    zone_a_sees(&z, 1).await;
    // Zone tokens come from the global, not from a federated zone.
    let out =
        z.a.cli(&["generate", "zone-token", "--zone", "zone-a"], None)
            .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("issued by the global control plane"));

    // `backend.mesh` answers for a service only zone-b has: a
    // transparently proxied dataplane of zone-a gets its name and VIP.
    z.a.apply(&format!(
        "type: Dataplane\nmesh: default\nname: tp-1\nnetworking:\n  address: {}\n  inbound:\n  - port: 8080\n    tags:\n      kuma.io/service: tp\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n",
        net.host(9)
    ))
    .await;
    let record = eventually("backend.mesh for tp-1", Duration::from_secs(5), || async {
        let config =
            z.a.get_json("/meshes/default/dataplanes/tp-1/_config")
                .await
                .1;
        config["config"]["dnsRecords"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == "backend.mesh")
            .cloned()
    })
    .await;
    assert!(
        record["ips"][0]
            .as_str()
            .is_some_and(|ip| ip.starts_with("240.")),
        "{record}"
    );
    let a1 = Dataplane::start(&z.a, &backend("backend-a1", net.host(4)), dir);
    let a2 = Dataplane::start(&z.a, &backend("backend-a2", net.host(5)), dir);
    a1.wait_ready().await;
    a2.wait_ready().await;
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 3)
        .await;

    // 2 instances here, 1 there: about 2:1.
    let http = client::Http1::default();
    let url = format!("http://{web_ip}:10001/");
    let n = 3000;
    let counts = client::tally(&http, &url, n).await;
    let (local, remote) = (share(&counts, &["a1", "a2"]), share(&counts, &["b1"]));
    println!(
        "split over {n} requests: zone-a {local} ({:.1} %), zone-b {remote} ({:.1} %): {counts:?}",
        100.0 * local as f64 / n as f64,
        100.0 * remote as f64 / n as f64
    );
    assert_eq!(local + remote, n, "failed requests: {counts:?}");
    let remote_share = remote as f64 / n as f64;
    assert!(
        (0.30..=0.37).contains(&remote_share),
        "zone-b should get about a third: {counts:?}"
    );
    let through_ingress = ingress
        .metric("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"default_backend\"}")
        .await;
    assert!(
        through_ingress >= 1.0,
        "the ingress carried no connection to backend"
    );

    // The ingress routes by SNI without answering TLS itself: openssl
    // gets backend-b1's own certificate through it, and nothing for an
    // SNI it does not serve.
    let sni = web.config_dump().await["config"]["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "backend"))
        .map(|c| c["sni"].as_str().unwrap_or_default().to_string())
        .expect("backend cluster in web's config");
    assert!(sni.ends_with(".backend.default.ks"), "{sni}");
    let presented = mtls::openssl_peer(ingress_ip, 10001, &sni).await;
    assert!(
        presented.contains("URI:spiffe://default/backend"),
        "through the ingress, the certificate must be the destination's: {presented}"
    );
    let unknown = mtls::openssl_peer(ingress_ip, 10001, "nothing.default.ks").await;
    assert!(
        unknown.contains("no peer certificate available"),
        "an unknown SNI must get no certificate: {unknown}"
    );
    eventually(
        "the refused SNI counted",
        Duration::from_secs(5),
        || async {
            (ingress
                .metric_sum("envoy_listener_no_filter_chain_match")
                .await
                >= 1.0)
                .then_some(())
        },
    )
    .await;

    // Only zone-b has instances: everything goes through its ingress.
    a1.sigterm();
    a2.sigterm();
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 1)
        .await;
    let counts = client::tally(&http, &url, 100).await;
    assert_eq!(counts.get("b1"), Some(&100), "{counts:?}");

    // A draining ingress withdraws what it offers before it stops listening.
    ingress.sigterm();
    zone_a_sees(&z, 0).await;
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 0)
        .await;
    drop(z.global);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_keeps_traffic_local_and_fails_over_to_the_other_zone_without_a_failed_get() {
    let z = zones().await;
    let (net, dir) = (&z.net, z.root.path());
    // Kuma's policy form (Mesh.routing.localityAwareLoadBalancing does the
    // same; cp-lite's cross_zone_tests cover it).
    z.global
        .apply(
            "type: MeshLoadBalancingStrategy
mesh: default
name: local-first
spec:
  targetRef: {kind: Mesh}
  to:
  - targetRef: {kind: MeshService, name: backend}
    default:
      localityAwareness:
        crossZone:
          failover:
          - to: {type: Any}
",
        )
        .await;
    let web_ip = net.host(3);
    let web = start_web(&z, web_ip);
    let _apps = [
        apps::http(SocketAddr::new(net.host(4), 18081), "a1").await,
        apps::http(SocketAddr::new(net.host(7), 18081), "b1").await,
    ];
    let mut a1 = Dataplane::start(&z.a, &backend("backend-a1", net.host(4)), dir);
    let b1 = Dataplane::start(&z.b, &backend("backend-b1", net.host(7)), dir);
    let mut ingress = start_ingress_b(&z);
    for dp in [&web, &a1, &b1, &ingress] {
        dp.wait_ready().await;
    }
    zone_a_sees(&z, 1).await;
    let listener = format!("outbound:{web_ip}:10001");
    web.wait_endpoints(&listener, 2).await;
    // The policy, synced from the global, puts zone-b after zone-a.
    eventually(
        "zone-b's ingress at priority 1",
        Duration::from_secs(10),
        || async {
            let dump = web.config_dump().await;
            let cluster = dump["config"]["clusters"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == "backend")?
                .clone();
            let endpoints = cluster["endpoints"].as_array()?.clone();
            endpoints
                .iter()
                .any(|e| e["address"] == net.host(6).to_string() && e["priority"] == 1)
                .then_some(())
        },
    )
    .await;

    let http = client::Http1::default();
    let url = format!("http://{web_ip}:10001/");
    let counts = client::tally(&http, &url, 300).await;
    assert_eq!(
        counts.get("a1"),
        Some(&300),
        "all local while a1 is up: {counts:?}"
    );

    // a1 stops while requests flow: they move to zone-b, none fails.
    let flow = {
        let url = url.clone();
        tokio::spawn(async move {
            let http = client::Http1::default();
            let mut seen = std::collections::BTreeMap::new();
            for _ in 0..1500 {
                let key = match http.get(&url).await {
                    Ok(r) if r.status == 200 => r.text(),
                    Ok(r) => format!("status {}", r.status),
                    Err(e) => format!("error {e}"),
                };
                *seen.entry(key).or_insert(0usize) += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    a1.sigterm();
    a1.wait_exit(Duration::from_secs(10)).await;
    let seen = flow.await.expect("request loop");
    println!("while a1 stopped: {seen:?}");
    assert_eq!(
        share(&seen, &["a1", "b1"]),
        1500,
        "failed GETs during failover: {seen:?}"
    );
    assert!(seen.get("b1").copied().unwrap_or(0) > 0, "{seen:?}");
    let counts = client::tally(&http, &url, 100).await;
    assert_eq!(counts.get("b1"), Some(&100), "{counts:?}");

    // a1 back: traffic returns home.
    let a1 = Dataplane::start(&z.a, &backend("backend-a1", net.host(4)), dir);
    a1.wait_ready().await;
    eventually(
        "traffic back in zone-a",
        Duration::from_secs(10),
        || async {
            let counts = client::tally(&http, &url, 20).await;
            (counts.get("a1") == Some(&20)).then_some(())
        },
    )
    .await;

    // zone-b's ingress killed (-9, no drain): its zone CP withdraws what
    // it offered at once, and zone-a drops it well before the
    // deregistration delay (3 s in tests) would have.
    web.wait_endpoints(&listener, 2).await;
    ingress.kill();
    let killed = std::time::Instant::now();
    web.wait_endpoints(&listener, 1).await;
    let gone_after = killed.elapsed();
    println!("killed ingress out of web's endpoints after {gone_after:?}");
    assert!(
        gone_after < Duration::from_millis(2500),
        "the killed ingress stayed {gone_after:?}"
    );
    let _ = &z.token_a;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_zone_egress_cross_zone_traffic_leaves_through_it_and_permissions_still_apply() {
    let z = zones().await;
    let (net, dir) = (&z.net, z.root.path());
    z.global
        .apply(&mtls::mesh_yaml(
            "STRICT",
            "8s",
            "routing:\n  zoneEgress: true\n",
        ))
        .await;
    let web_ip = net.host(3);
    let web = start_web(&z, web_ip);
    let _b1_app = apps::http(SocketAddr::new(net.host(7), 18081), "b1").await;
    let b1 = Dataplane::start(&z.b, &backend("backend-b1", net.host(7)), dir);
    let ingress = start_ingress_b(&z);
    for dp in [&web, &b1, &ingress] {
        dp.wait_ready().await;
    }
    zone_a_sees(&z, 1).await;

    // The mesh requires an egress and zone-a has none: the caller is told,
    // and so is whoever reads web-1's insight.
    let http = client::Http1::default();
    let url = format!("http://{web_ip}:10001/");
    let reply = eventually(
        "the 503 that names the egress",
        Duration::from_secs(10),
        || async {
            let r = http.get(&url).await.ok()?;
            (r.status == 503 && r.text().contains("zone egress")).then_some(r)
        },
    )
    .await;
    println!(
        "without an egress: {} {}",
        reply.status,
        reply.text().trim()
    );
    assert_eq!(
        reply.text(),
        "no healthy upstream: mesh \"default\" sends cross-zone traffic through a zone egress \
         (routing.zoneEgress), and this zone has none: start one with koguma-dp run --proxy-type egress\n"
    );
    let insight = z.a.insight("web-1").await;
    let warnings = insight["warnings"].to_string();
    assert!(warnings.contains("zone egress"), "{insight}");

    // With one: sidecar -> egress -> zone-b's ingress -> sidecar.
    let egress = start_zone_proxy(
        &z.a,
        "egress",
        "egress-a",
        &koguma_e2e::multizone::egress_yaml("egress-a", net.host(10), 10002),
        &z.token_a,
        dir,
    );
    egress.wait_ready().await;
    web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 1)
        .await;
    let dump = web.config_dump().await;
    let endpoint = dump["config"]["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "backend"))
        .map(|c| c["endpoints"][0]["address"].clone());
    assert_eq!(endpoint, Some(net.host(10).to_string().into()), "{dump}");
    let counts = client::tally(&http, &url, 50).await;
    assert_eq!(counts.get("b1"), Some(&50), "{counts:?}");
    let cx = "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"default_backend\"}";
    let (through_egress, through_ingress) = (egress.metric(cx).await, ingress.metric(cx).await);
    println!("connections to backend: egress {through_egress}, ingress {through_ingress}");
    assert!(through_egress >= 1.0 && through_ingress >= 1.0);
    let web_cx = web
        .metric("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"backend\"}")
        .await;
    assert!(web_cx >= 1.0);

    // ExternalServices, through the egress: plain HTTP, and TLS to a host
    // whose certificate the ExternalService's caCert verifies.
    let _plain_app = apps::http(SocketAddr::new(net.host(11), 18090), "outside").await;
    let tls_host = SocketAddr::new(net.host(12), 18443);
    let (_tls_server, ca_pem) = external::external_tls_server(tls_host, dir);
    z.global
        .apply(&format!(
            "type: ExternalService\nmesh: default\nname: plain\ntags:\n  kuma.io/service: ext-plain\n  kuma.io/protocol: http\nnetworking:\n  address: {}:18090\n---\ntype: ExternalService\nmesh: default\nname: secure\ntags:\n  kuma.io/service: ext-tls\nnetworking:\n  address: {tls_host}\n  tls:\n    enabled: true\n    serverName: ext.test\n    caCert:\n      inline: {}\n",
            net.host(11),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &ca_pem),
        ))
        .await;
    let (plain_port, tls_port) = (10011, 10012);
    let caller_ip = net.host(13);
    let caller = Dataplane::start(
        &z.a,
        &DataplaneYaml::new("caller-1", caller_ip)
            .inbound(8080, 18080, "caller", "http")
            .outbound(caller_ip, plain_port, "ext-plain")
            .outbound(caller_ip, tls_port, "ext-tls"),
        dir,
    );
    caller.wait_ready().await;
    caller
        .wait_endpoints(&format!("outbound:{caller_ip}:{plain_port}"), 1)
        .await;
    let reply = eventually(
        "ext-plain through the egress",
        Duration::from_secs(10),
        || async {
            let r = http
                .get(&format!("http://{caller_ip}:{plain_port}/"))
                .await
                .ok()?;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    assert_eq!(reply.text(), "outside");
    let answer = eventually(
        "ext-tls through the egress",
        Duration::from_secs(10),
        || async {
            let a = external::raw_http_get(SocketAddr::new(caller_ip, tls_port)).await;
            a.starts_with("HTTP/1.0 200").then_some(a)
        },
    )
    .await;
    assert!(answer.contains("s_server"), "{answer}");
    let terminated = egress.metric_sum("envoy_listener_ssl_handshake").await;
    assert!(
        terminated >= 2.0,
        "the egress terminated {terminated} mesh mTLS handshakes"
    );

    // The egress's certificates (8 s here) are renewed like a sidecar's:
    // a new one is in force before the first expires, and traffic goes on.
    let first = egress.cert().await.expect("the egress has a certificate");
    assert_eq!(
        first["subjectAltNames"][0], "spiffe://default/zone-egress",
        "{first}"
    );
    eventually(
        "the egress certificate renewed",
        Duration::from_secs(15),
        || async {
            let now = egress.cert().await?;
            (now["serialNumber"] != first["serialNumber"]).then_some(())
        },
    )
    .await;
    let reply = http
        .get(&format!("http://{caller_ip}:{plain_port}/"))
        .await
        .expect("ext-plain after renewal");
    assert_eq!((reply.status, reply.text()), (200, "outside".to_string()));

    // A permission that denies web is enforced by backend-b1's sidecar,
    // from web's own identity, across both zone proxies.
    z.global
        .apply(
            "type: MeshTrafficPermission
mesh: default
name: deny-web
spec:
  targetRef: {kind: Mesh}
  from:
  - targetRef: {kind: MeshService, name: web}
    default: {action: Deny}
",
        )
        .await;
    eventually(
        "web denied across zones",
        Duration::from_secs(10),
        || async {
            let r = http.get(&url).await.ok()?;
            (r.status == 403).then_some(())
        },
    )
    .await;
    let denied = b1.metric_sum("envoy_rbac_denied").await;
    assert!(denied >= 1.0, "backend-b1 denied nothing");
}
