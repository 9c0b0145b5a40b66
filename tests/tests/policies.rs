//! The traffic policies as a user sees them: each one applied with
//! `koguma-cp apply`, and its effect on requests from web to backend
//! through real sidecars: statuses, which instance answered, timings and
//! the Envoy metrics Kuma's dashboards read.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use koguma_e2e::{WebToBackend, client, eventually};

/// Applies `yaml` and waits until web's config shows `probe` in the
/// backend cluster's policy (the CP pushed it and the agent took it).
async fn apply_policy(mesh: &WebToBackend, yaml: &str, probe: &str) {
    mesh.cp.apply(yaml).await;
    eventually(
        &format!("web's config to carry {probe}"),
        Duration::from_secs(10),
        || async {
            let dump = mesh.web.config_dump().await;
            let clusters = dump["config"]["clusters"].as_array()?;
            let backend = clusters.iter().find(|c| c["name"] == "backend")?;
            backend["policy"].to_string().contains(probe).then_some(())
        },
    )
    .await;
}

/// `n` GETs of `path` with `headers`, counted by answer (body, or status).
async fn tally(
    mesh: &WebToBackend,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> BTreeMap<String, usize> {
    client::tally_with(&client::Http1::default(), &mesh.url(path), headers, n).await
}

async fn backend_metric(mesh: &WebToBackend, name: &str) -> f64 {
    mesh.web
        .metric(&format!("{name}{{envoy_cluster_name=\"backend\"}}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_mesh_timeout_turns_a_slow_server_into_a_504_within_a_second() {
    let mesh = WebToBackend::start(1).await;
    // Without a policy, Kuma's default request timeout (15 s) lets 3 s pass.
    let slow = mesh.url("/slow?ms=3000");
    let started = Instant::now();
    let r = client::get(&slow).await.expect("slow request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() >= Duration::from_secs(3));

    apply_policy(
        &mesh,
        "type: MeshTimeout\nmesh: default\nname: backend-1s\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    default:\n      http: {requestTimeout: 1s}\n",
        "\"requestMs\":1000",
    )
    .await;
    let started = Instant::now();
    let r = client::get(&slow).await.expect("slow request");
    let took = started.elapsed();
    println!(
        "a 3 s request under a 1 s MeshTimeout: {} after {took:?}",
        r.status
    );
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        r.text().contains("upstream request timeout"),
        "{}",
        r.text()
    );
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    // Faster than the timeout: answered as before.
    let fast = client::get(&mesh.url("/slow?ms=100")).await.expect("fast");
    assert_eq!(fast.status, 200);
    assert!(backend_metric(&mesh, "envoy_cluster_upstream_rq_timeout").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_retry_hides_a_server_that_fails_every_other_request() {
    let mesh = WebToBackend::start(1).await;
    // Kuma's default retries gateway errors only: half the answers are 500s.
    let before = tally(&mesh, "/flaky", &[], 20).await;
    assert_eq!(before.get("status 500"), Some(&10), "{before:?}");

    apply_policy(
        &mesh,
        "type: MeshRetry\nmesh: default\nname: retry-5xx\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    default:\n      http:\n        numRetries: 3\n        retryOn: [5XX]\n        backOff: {baseInterval: 10ms, maxInterval: 50ms}\n",
        "\"retryOn\":[\"5XX\"]",
    )
    .await;
    let retries_before = backend_metric(&mesh, "envoy_cluster_upstream_rq_retry").await;
    let after = tally(&mesh, "/flaky", &[], 40).await;
    assert_eq!(after, BTreeMap::from([("b1".to_string(), 40)]), "{after:?}");
    let retries = backend_metric(&mesh, "envoy_cluster_upstream_rq_retry").await - retries_before;
    println!("40 GETs of a server failing every other request: all 200, {retries} retries");
    assert!(retries >= 15.0, "{retries} retries");
    // A POST is retried too (Envoy's rule for 5XX), its body sent again.
    let http = client::Http1::default();
    for i in 0..10 {
        let body = format!("order {i}");
        let r = http
            .send(
                http::Method::POST,
                &mesh.url("/flaky"),
                &[],
                Bytes::from(body.clone()),
            )
            .await
            .expect("post");
        assert_eq!((r.status, r.text()), (200, body));
    }
    assert!(backend_metric(&mesh, "envoy_cluster_upstream_rq_retry_success").await >= 15.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_instance_and_sends_it_nothing_after() {
    let mesh = WebToBackend::start(3).await;
    apply_policy(
        &mesh,
        "type: MeshRetry\nmesh: default\nname: no-retry\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      http: {numRetries: 0}\n---\ntype: MeshCircuitBreaker\nmesh: default\nname: eject-on-5xx\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    default:\n      outlierDetection:\n        baseEjectionTime: 60s\n        maxEjectionPercent: 50\n        detectors:\n          totalFailures: {consecutive: 3}\n",
        "\"consecutiveTotal\":3",
    )
    .await;
    mesh.backends[2].app.fail_with(500);
    let first = tally(&mesh, "/", &[], 30).await;
    let failures = first.get("status 500").copied().unwrap_or(0);
    let hits_after_ejection = mesh.backends[2].app.hits();
    let second = tally(&mesh, "/", &[], 60).await;
    println!("before ejection: {first:?}; after: {second:?}");
    // Three 500s in a row take b3 out; with round robin over three, that
    // takes nine requests, and it sees none after.
    assert_eq!(failures, 3, "{first:?}");
    assert_eq!(mesh.backends[2].app.hits(), hits_after_ejection);
    assert_eq!(second.get("status 500"), None, "{second:?}");
    assert_eq!(second.values().sum::<usize>(), 60);
    assert_eq!(
        backend_metric(
            &mesh,
            "envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_a_header_value_on_one_instance() {
    let mesh = WebToBackend::start(3).await;
    apply_policy(
        &mesh,
        "type: MeshLoadBalancingStrategy\nmesh: default\nname: by-user\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    default:\n      loadBalancer:\n        type: RingHash\n        ringHash:\n          hashPolicies:\n          - type: Header\n            header: {name: x-user}\n",
        "\"type\":\"RingHash\"",
    )
    .await;
    let mut owners = BTreeMap::new();
    for user in 0..12 {
        let name = format!("user-{user}");
        let seen = tally(&mesh, "/", &[("x-user", &name)], 15).await;
        assert_eq!(seen.len(), 1, "{name} was answered by {seen:?}");
        owners.insert(name, seen.into_keys().next().unwrap_or_default());
    }
    let instances: std::collections::BTreeSet<&String> = owners.values().collect();
    println!("12 users over 3 instances: {owners:?}");
    assert!(
        instances.len() >= 2,
        "every user on one instance: {owners:?}"
    );
    // Without the header: spread, as Envoy picks at random then.
    let anonymous = tally(&mesh, "/", &[], 30).await;
    assert!(anonymous.len() >= 2, "{anonymous:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_an_unhealthy_endpoint_out_and_bring_it_back() {
    let mesh = WebToBackend::start(2).await;
    apply_policy(
        &mesh,
        "type: MeshHealthCheck\nmesh: default\nname: hc\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    default:\n      interval: 200ms\n      timeout: 1s\n      unhealthyThreshold: 2\n      healthyThreshold: 1\n      http: {path: /health}\n",
        "\"path\":\"/health\"",
    )
    .await;
    // b2's health endpoint fails while it still answers everything else:
    // only the checks can take it out.
    mesh.backends[1].app.set_health(503);
    let started = Instant::now();
    eventually("b2 out of rotation", Duration::from_secs(10), || async {
        (backend_metric(&mesh, "envoy_cluster_membership_healthy").await == 1.0).then_some(())
    })
    .await;
    println!("unhealthy endpoint out after {:?}", started.elapsed());
    let out = tally(&mesh, "/", &[], 30).await;
    assert_eq!(out, BTreeMap::from([("b1".to_string(), 30)]), "{out:?}");
    assert!(backend_metric(&mesh, "envoy_cluster_health_check_failure").await >= 2.0);

    mesh.backends[1].app.set_health(200);
    let started = Instant::now();
    eventually("b2 back in rotation", Duration::from_secs(10), || async {
        (backend_metric(&mesh, "envoy_cluster_membership_healthy").await == 2.0).then_some(())
    })
    .await;
    println!("healthy again, back after {:?}", started.elapsed());
    let back = tally(&mesh, "/", &[], 30).await;
    assert!(back.get("b2").is_some_and(|n| *n >= 10), "{back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_breaker_limit_refuses_what_goes_beyond_it() {
    let mesh = WebToBackend::start(1).await;
    apply_policy(
        &mesh,
        "type: MeshCircuitBreaker\nmesh: default\nname: one-at-a-time\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      connectionLimits: {maxRequests: 2}\n",
        "\"maxRequests\":2",
    )
    .await;
    let mut slow = Vec::new();
    for _ in 0..5 {
        let url = mesh.url("/slow?ms=1000");
        slow.push(tokio::spawn(async move { client::get(&url).await }));
    }
    let mut statuses = BTreeMap::new();
    for t in slow {
        let r = t.await.expect("task").expect("request");
        if r.status == 503 {
            assert_eq!(
                r.headers.get("x-envoy-overloaded").map(|v| v.as_bytes()),
                Some(&b"true"[..])
            );
        }
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    println!("5 concurrent slow requests under maxRequests 2: {statuses:?}");
    assert_eq!(statuses.get(&200), Some(&2), "{statuses:?}");
    assert_eq!(statuses.get(&503), Some(&3), "{statuses:?}");
    assert_eq!(
        backend_metric(&mesh, "envoy_cluster_upstream_rq_pending_overflow").await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_wide_default_is_overridden_field_by_field_by_a_service_policy() {
    let mesh = WebToBackend::start(1).await;
    apply_policy(
        &mesh,
        "type: MeshTimeout\nmesh: default\nname: mesh-wide\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      connectionTimeout: 2s\n      http: {requestTimeout: 5s, streamIdleTimeout: 20s}\n---\ntype: MeshTimeout\nmesh: default\nname: backend-fast\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    default:\n      http: {requestTimeout: 800ms}\n",
        "\"requestMs\":800",
    )
    .await;
    let dump = mesh.web.config_dump().await;
    let backend = dump["config"]["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "backend"))
        .expect("backend cluster")["policy"]["timeouts"]
        .clone();
    // The service's own request timeout; the rest from the mesh-wide one.
    assert_eq!(backend["requestMs"], 800);
    assert_eq!(backend["connectMs"], 2000);
    assert_eq!(backend["streamIdleMs"], 20000);
    let started = Instant::now();
    let r = client::get(&mesh.url("/slow?ms=2000")).await.expect("slow");
    assert_eq!(r.status, 504);
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    // Deleting the specific policy brings the mesh-wide value back.
    let out = mesh
        .cp
        .cli(
            &["delete", "meshtimeout", "backend-fast", "--mesh", "default"],
            None,
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        "the mesh-wide timeout back",
        Duration::from_secs(10),
        || async {
            let dump = mesh.web.config_dump().await;
            dump.to_string()
                .contains("\"requestMs\":5000")
                .then_some(())
        },
    )
    .await;
    let r = client::get(&mesh.url("/slow?ms=2000")).await.expect("slow");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies_are_refused_naming_the_field_and_change_nothing() {
    let mesh = WebToBackend::start(1).await;
    for (yaml, field) in [
        (
            "type: MeshTimeout\nmesh: default\nname: bad\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default: {connectionTimeout: soon}\n",
            "spec.to[0].default.connectionTimeout",
        ),
        (
            "type: MeshRetry\nmesh: default\nname: bad\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      http: {retryOn: [Sometimes]}\n",
            "spec.to[0].default.http.retryOn[0]",
        ),
        (
            "type: MeshCircuitBreaker\nmesh: default\nname: bad\nspec:\n  to:\n  - targetRef: {kind: MeshSubset, tags: {version: v1}}\n    default:\n      connectionLimits: {maxRequests: 0}\n",
            "spec.to[0].targetRef.kind",
        ),
        (
            "type: MeshHealthCheck\nmesh: default\nname: bad\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default: {interval: 10s}\n",
            "spec.to[0].default",
        ),
        (
            "type: MeshLoadBalancingStrategy\nmesh: default\nname: bad\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      loadBalancer: {type: LeastRequest, leastRequest: {choiceCount: 1}}\n",
            "spec.to[0].default.loadBalancer.leastRequest.choiceCount",
        ),
        (
            "type: MeshHTTPRoute\nmesh: default\nname: bad\nspec:\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    rules:\n    - matches: [{path: {type: PathPrefix, value: api}}]\n      default: {backendRefs: [{kind: MeshService, name: backend}]}\n",
            "spec.to[0].rules[0].matches[0].path.value",
        ),
        (
            "type: MeshTCPRoute\nmesh: default\nname: bad\nspec:\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    rules:\n    - default: {backendRefs: []}\n",
            "spec.to[0].rules[0].default.backendRefs",
        ),
        (
            "type: MeshFaultInjection\nmesh: default\nname: bad\nspec:\n  from:\n  - targetRef: {kind: Mesh}\n    default:\n      http:\n      - abort: {httpStatus: 700, percentage: 50}\n",
            "spec.from[0].default.http[0].abort.httpStatus",
        ),
        (
            "type: MeshFaultInjection\nmesh: default\nname: bad\nspec:\n  from:\n  - targetRef: {kind: Mesh}\n    default:\n      http:\n      - responseBandwidth: {limit: 10mbit, percentage: 50}\n",
            "spec.from[0].default.http[0].responseBandwidth.limit",
        ),
        (
            "type: MeshRateLimit\nmesh: default\nname: bad\nspec:\n  from:\n  - targetRef: {kind: Mesh}\n    default:\n      local:\n        http:\n          requestRate: {num: 10, interval: 10ms}\n",
            "spec.from[0].default.local.http.requestRate.interval",
        ),
        (
            "type: MeshRateLimit\nmesh: default\nname: bad\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      local:\n        tcp: {connectionRate: {num: 1, interval: 1s}}\n",
            "spec.to",
        ),
        (
            "type: MeshAccessLog\nmesh: default\nname: bad\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      backends:\n      - type: File\n        file:\n          path: /tmp/x.log\n          format: {type: Plain, plain: \"%NOT_AN_OPERATOR%\"}\n",
            "spec.to[0].default.backends[0].file.format.plain",
        ),
        (
            "type: MeshAccessLog\nmesh: default\nname: bad\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      backends:\n      - type: Tcp\n        tcp: {address: no-port}\n",
            "spec.to[0].default.backends[0].tcp.address",
        ),
    ] {
        let out = mesh.cp.cli(&["apply", "-f", "-"], Some(yaml)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {yaml}");
        assert!(stderr.contains(field), "{field} not named in: {stderr}");
    }
    for kind in [
        "meshtimeouts",
        "meshfaultinjections",
        "meshratelimits",
        "meshaccesslogs",
    ] {
        let (status, list) = mesh.cp.get_json(&format!("/meshes/default/{kind}")).await;
        assert_eq!(status, 200);
        assert_eq!(list["total"], 0, "{kind}: {list}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_mesh_timeout_limits_how_long_the_backends_sidecar_waits() {
    let mesh = WebToBackend::start(1).await;
    mesh.cp
        .apply("type: MeshTimeout\nmesh: default\nname: backend-inbound\nspec:\n  targetRef: {kind: MeshService, name: backend}\n  rules:\n  - default:\n      http: {requestTimeout: 1s}\n")
        .await;
    let backend = &mesh.backends[0].dp;
    eventually(
        "backend's inbound to carry the timeout",
        Duration::from_secs(10),
        || async {
            let dump = backend.config_dump().await;
            dump["config"]["inbounds"][0]["policy"]
                .to_string()
                .contains("\"requestMs\":1000")
                .then_some(())
        },
    )
    .await;
    // web's own request timeout is still Kuma's 15 s: the 504 comes from
    // backend's sidecar, after its 1 s. A POST: not retried by default.
    let http = client::Http1::default();
    let started = Instant::now();
    let r = http
        .send(
            http::Method::POST,
            &mesh.url("/slow?ms=3000"),
            &[],
            Bytes::new(),
        )
        .await
        .expect("slow post");
    let took = started.elapsed();
    println!(
        "a 3 s request under backend's 1 s inbound MeshTimeout: {} after {took:?}",
        r.status
    );
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(took < Duration::from_millis(2500), "{took:?}");
    // web's outbound was not touched.
    let web = mesh.web.config_dump().await;
    let backend_cluster = web["config"]["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "backend"))
        .cloned()
        .unwrap_or_default();
    assert!(backend_cluster["policy"].is_null(), "{backend_cluster}");
}
