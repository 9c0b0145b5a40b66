//! MeshHTTPRoute and MeshTCPRoute as a user sees them: web calls the
//! `backend` service (instances tagged version v1 and v2) and routes send
//! its requests by path, header and weight, rewrite and redirect them,
//! mirror them, and split TCP connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::{ControlPlane, Dataplane, TestNet, apps, client, eventually};

struct Topology {
    _net: TestNet,
    _dir: tempfile::TempDir,
    cp: ControlPlane,
    web: Dataplane,
    web_ip: std::net::IpAddr,
    /// backend v1, backend v2, other
    apps: Vec<apps::Server>,
    _dps: Vec<Dataplane>,
}

impl Topology {
    /// web → backend (b1 version v1, b2 version v2) and `other` (o1), all
    /// speaking `protocol`.
    async fn start(protocol: &str) -> Topology {
        let net = TestNet::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let cp = ControlPlane::start(net.host(0), dir.path()).await;
        let web_ip = net.host(1);
        let web_yaml = DataplaneYaml::new("web-1", web_ip)
            .inbound(8080, 18080, "web", "http")
            .outbound(web_ip, 10001, "backend");
        let web = Dataplane::start(&cp, &web_yaml, dir.path());
        let mut apps = Vec::new();
        let mut dps = Vec::new();
        for (i, (name, service, version)) in [
            ("b1", "backend", "v1"),
            ("b2", "backend", "v2"),
            ("o1", "other", "v1"),
        ]
        .into_iter()
        .enumerate()
        {
            let ip = net.host(2 + i as u8);
            apps.push(apps::http(SocketAddr::new(ip, 18081), name).await);
            let yaml = DataplaneYaml::new(&format!("{name}-dp"), ip)
                .inbound(8081, 18081, service, protocol)
                .tag("version", version);
            dps.push(Dataplane::start(&cp, &yaml, dir.path()));
        }
        web.wait_ready().await;
        web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 2)
            .await;
        Topology {
            _net: net,
            _dir: dir,
            cp,
            web,
            web_ip,
            apps,
            _dps: dps,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}:10001{path}", self.web_ip)
    }

    /// Applies `yaml` and waits until web's config has routes on its
    /// backend outbound.
    async fn route(&self, yaml: &str) {
        self.cp.apply(yaml).await;
        eventually(
            "web's outbound to carry the route",
            Duration::from_secs(10),
            || async {
                let dump = self.web.config_dump().await;
                let clusters = dump["config"]["clusters"].as_array()?;
                // The other service's cluster comes with a route that names it.
                clusters
                    .iter()
                    .any(|c| {
                        c["name"] == "other"
                            && c["endpoints"].as_array().is_some_and(|e| !e.is_empty())
                    })
                    .then_some(())
            },
        )
        .await;
    }
}

async fn tally(
    t: &Topology,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> BTreeMap<String, usize> {
    client::tally_with(&client::Http1::default(), &t.url(path), headers, n).await
}

const ROUTE_HEAD: &str = "type: MeshHTTPRoute\nmesh: default\nname: backend-routes\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    rules:\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_send_requests_by_path_header_and_weight() {
    let t = Topology::start("http").await;
    t.route(&format!(
        "{ROUTE_HEAD}    - matches: [{{path: {{type: PathPrefix, value: /v2}}}}]\n      default:\n        backendRefs: [{{kind: MeshServiceSubset, name: backend, tags: {{version: v2}}}}]\n    - matches: [{{path: {{type: PathPrefix, value: /}}, headers: [{{type: Exact, name: x-canary, value: 'yes'}}]}}]\n      default:\n        backendRefs: [{{kind: MeshService, name: other}}]\n    - matches: [{{path: {{type: Exact, value: /split}}}}]\n      default:\n        backendRefs:\n        - {{kind: MeshServiceSubset, name: backend, tags: {{version: v1}}, weight: 90}}\n        - {{kind: MeshService, name: other, weight: 10}}\n    - matches: [{{path: {{type: PathPrefix, value: /nowhere}}}}]\n      default:\n        backendRefs: [{{kind: MeshService, name: missing}}]\n"
    ))
    .await;
    // By path: /v2 and below to the v2 instance only; /v2x is not below it.
    assert_eq!(
        tally(&t, "/v2/items", &[], 20).await,
        BTreeMap::from([("b2".into(), 20)])
    );
    let v2x = tally(&t, "/v2x", &[], 20).await;
    assert!(v2x.contains_key("b1") && v2x.contains_key("b2"), "{v2x:?}");
    // By header, whatever the path.
    assert_eq!(
        tally(&t, "/any", &[("x-canary", "yes")], 10).await,
        BTreeMap::from([("o1".into(), 10)])
    );
    // By weight: 90/10 between backend v1 and other.
    let split = tally(&t, "/split", &[], 300).await;
    let other = split.get("o1").copied().unwrap_or(0);
    println!("/split over 300 requests: {split:?}");
    assert_eq!(
        split.get("b1").copied().unwrap_or(0) + other,
        300,
        "{split:?}"
    );
    assert!((10..=55).contains(&other), "{split:?}");
    // A backend that does not exist: 500 naming it.
    let r = client::get(&t.url("/nowhere")).await.expect("get");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("missing"), "{}", r.text());
    // Matched by no rule: the service itself, as in Kuma 2.x.
    let rest = tally(&t, "/else", &[], 20).await;
    assert!(
        rest.contains_key("b1") && rest.contains_key("b2") && !rest.contains_key("o1"),
        "{rest:?}"
    );
    // The subset clusters count as backend in the metrics.
    let total = t
        .web
        .metric("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"}")
        .await;
    assert!(total >= 300.0, "{total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_filters_modify_rewrite_redirect_and_mirror() {
    let t = Topology::start("http").await;
    t.route(&format!(
        "{ROUTE_HEAD}    - matches: [{{path: {{type: PathPrefix, value: /headers}}}}]\n      default:\n        filters:\n        - type: RequestHeaderModifier\n          requestHeaderModifier: {{set: [{{name: x-route, value: headers}}], remove: [x-drop]}}\n        - type: ResponseHeaderModifier\n          responseHeaderModifier: {{add: [{{name: x-served-by-route, value: 'yes'}}]}}\n        backendRefs: [{{kind: MeshService, name: backend}}]\n    - matches: [{{path: {{type: PathPrefix, value: /old}}}}]\n      default:\n        filters:\n        - type: URLRewrite\n          urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}}}\n        backendRefs: [{{kind: MeshService, name: backend}}]\n    - matches: [{{path: {{type: PathPrefix, value: /moved}}}}]\n      default:\n        filters:\n        - type: RequestRedirect\n          requestRedirect: {{scheme: https, hostname: example.com, statusCode: 301}}\n    - matches: [{{path: {{type: Exact, value: /mirrored}}}}]\n      default:\n        filters:\n        - type: RequestMirror\n          requestMirror: {{backendRef: {{kind: MeshService, name: other}}}}\n        backendRefs: [{{kind: MeshServiceSubset, name: backend, tags: {{version: v1}}}}]\n"
    ))
    .await;
    let http = client::Http1::default();
    let r = http
        .send(
            http::Method::GET,
            &t.url("/headers"),
            &[("x-drop", "1"), ("x-keep", "1")],
            Bytes::new(),
        )
        .await
        .expect("headers");
    let seen = r.text();
    assert!(seen.contains("x-route: headers"), "{seen}");
    assert!(
        seen.contains("x-keep: 1") && !seen.contains("x-drop"),
        "{seen}"
    );
    assert_eq!(
        r.headers.get("x-served-by-route").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );

    let r = client::get(&t.url("/old/items?page=2"))
        .await
        .expect("rewrite");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers
            .get("x-seen-path")
            .map(|v| v.to_str().unwrap_or("")),
        Some("/new/items?page=2")
    );

    let r = client::get(&t.url("/moved/here")).await.expect("redirect");
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers.get("location").map(|v| v.to_str().unwrap_or("")),
        Some("https://example.com/moved/here")
    );

    let before = t.apps[2].hits();
    let answers = tally(&t, "/mirrored", &[], 10).await;
    assert_eq!(answers, BTreeMap::from([("b1".into(), 10)]));
    eventually(
        "the mirror to get every request",
        Duration::from_secs(5),
        || async { (t.apps[2].hits() - before >= 10).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_routes_split_connections_by_weight() {
    let t = Topology::start("tcp").await;
    t.route(
        "type: MeshTCPRoute\nmesh: default\nname: backend-split\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    rules:\n    - default:\n        backendRefs:\n        - {kind: MeshServiceSubset, name: backend, tags: {version: v2}, weight: 3}\n        - {kind: MeshService, name: other, weight: 1}\n",
    )
    .await;
    // Every request on a new connection: the split is per connection.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..200 {
        let key = match client::get(&t.url("/")).await {
            Ok(r) if r.status == 200 => r.text(),
            Ok(r) => format!("status {}", r.status),
            Err(e) => format!("error {e}"),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    println!("200 connections split 3:1: {counts:?}");
    assert_eq!(counts.get("b1"), None, "{counts:?}");
    let (v2, other) = (
        counts.get("b2").copied().unwrap_or(0),
        counts.get("o1").copied().unwrap_or(0),
    );
    assert_eq!(v2 + other, 200, "{counts:?}");
    assert!((25..=80).contains(&other), "{counts:?}");
}
