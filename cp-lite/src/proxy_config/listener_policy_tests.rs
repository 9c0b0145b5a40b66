//! What MeshFaultInjection, MeshRateLimit and MeshAccessLog put on a
//! dataplane's listeners.

use koguma_proto::v1 as pb;
use serde_json::json;

use super::test_catalog::{catalog, compute, dataplane, stored};

fn policy(
    kind: &str,
    name: &str,
    spec: serde_json::Value,
) -> std::sync::Arc<crate::store::StoredResource> {
    stored(json!({"type": kind, "mesh": "default", "name": name, "spec": spec}))
}

/// web calling backend (b1), and `policies`.
fn web_and_backend(
    mtls: bool,
    policies: Vec<std::sync::Arc<crate::store::StoredResource>>,
) -> crate::catalog::Catalog {
    let mut all = vec![
        stored(dataplane(
            "web",
            "127.0.0.2",
            "web",
            "http",
            Some("backend"),
        )),
        stored(dataplane("b1", "127.0.0.3", "backend", "http", None)),
    ];
    all.extend(policies);
    catalog(mtls, all)
}

#[test]
fn access_logs_get_kumas_default_format_with_the_listeners_values() {
    let c = web_and_backend(
        false,
        vec![policy(
            "MeshAccessLog",
            "all",
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [
                    {"type": "File", "file": {"path": "/var/log/out.log"}}]}}],
                       "from": [{"targetRef": {"kind": "Mesh"}, "default": {"backends": [
                    {"type": "Tcp", "tcp": {"address": "127.0.0.9:5000",
                     "format": {"type": "Json", "json": [{"key": "who", "value": "%KUMA_DESTINATION_SERVICE%"}]}}}]}}]}),
        )],
    );
    let web = compute(&c, "web");
    let out = web.outbounds[0]
        .listener_policy
        .as_ref()
        .expect("outbound policy");
    let log = &out.access_logs[0];
    assert_eq!(
        log.sink,
        Some(pb::access_log_backend::Sink::File(
            "/var/log/out.log".into()
        ))
    );
    assert!(
        log.plain
            .starts_with("[%START_TIME%] default \"%REQ(:METHOD)% "),
        "{}",
        log.plain
    );
    assert!(
        log.plain
            .ends_with("\"web\" \"backend\" \"127.0.0.2\" \"%UPSTREAM_HOST%\"\n"),
        "{}",
        log.plain
    );
    let b1 = compute(&c, "b1");
    let inbound = b1.inbounds[0]
        .listener_policy
        .as_ref()
        .expect("inbound policy");
    let log = &inbound.access_logs[0];
    assert_eq!(
        log.sink,
        Some(pb::access_log_backend::Sink::Tcp("127.0.0.9:5000".into()))
    );
    assert_eq!(log.json[0].name, "who");
    assert_eq!(log.json[0].value, "backend");
}

#[test]
fn rate_limits_and_faults_land_on_the_inbounds_they_select() {
    let c = web_and_backend(
        true,
        vec![
            policy(
                "MeshRateLimit",
                "backend-limit",
                json!({"targetRef": {"kind": "MeshService", "name": "backend"},
                       "from": [{"targetRef": {"kind": "Mesh"}, "default": {"local": {
                           "http": {"requestRate": {"num": 5, "interval": "10s"}, "onRateLimit": {"status": 503}},
                           "tcp": {"disabled": true, "connectionRate": {"num": 1, "interval": "1s"}}}}}]}),
            ),
            policy(
                "MeshFaultInjection",
                "web-faults",
                json!({"targetRef": {"kind": "MeshService", "name": "backend"},
                       "from": [{"targetRef": {"kind": "MeshService", "name": "web"}, "default": {"http": [
                           {"abort": {"httpStatus": 418, "percentage": "12.5"}}]}}]}),
            ),
        ],
    );
    let b1 = compute(&c, "b1");
    let p = b1.inbounds[0]
        .listener_policy
        .as_ref()
        .expect("inbound policy");
    let http = p.http_rate_limit.as_ref().expect("http limit");
    assert_eq!((http.num, http.interval_ms, http.status), (5, 10_000, 503));
    assert_eq!(p.tcp_rate_limit, None, "disabled");
    assert_eq!(p.faults.len(), 1);
    assert_eq!(p.faults[0].caller, "spiffe://default/web");
    assert_eq!(p.faults[0].faults[0].abort_status, Some(418));
    assert_eq!(p.faults[0].faults[0].abort_percent, 12.5);
    // web's inbound is not backend's: nothing there.
    assert_eq!(compute(&c, "web").inbounds[0].listener_policy, None);
}
