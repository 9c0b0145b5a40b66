use std::collections::BTreeMap;

use super::*;
use crate::policy::{RetryConf, TimeoutConf};
use crate::{Resource, Spec};

fn policy(yaml: &str) -> (String, Spec) {
    let value: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let r = Resource::from_value(value).unwrap();
    r.validate().unwrap();
    (r.meta.name.clone(), r.spec.clone())
}

fn tags(service: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut t: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    t.insert("kuma.io/service".into(), service.into());
    t
}

fn merged_timeout(
    policies: &[(String, Spec)],
    caller: &Caller<'_>,
    to: &str,
) -> Option<TimeoutConf> {
    merged(
        policies
            .iter()
            .filter_map(|(n, s)| s.as_policy().map(|p| (n.as_str(), p))),
        caller,
        to,
    )
}

#[test]
fn a_service_specific_policy_overrides_the_mesh_default_field_by_field() {
    let policies = vec![
        policy(
            "type: MeshTimeout\nmesh: default\nname: mesh-wide\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      connectionTimeout: 2s\n      idleTimeout: 20m\n      http: {requestTimeout: 10s, streamIdleTimeout: 5m}\n",
        ),
        policy(
            "type: MeshTimeout\nmesh: default\nname: backend-only\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    default:\n      http: {requestTimeout: 1s}\n",
        ),
    ];
    let labels = BTreeMap::new();
    let web = tags("web", &[]);
    let caller = Caller {
        name: "web-1",
        labels: &labels,
        inbounds: vec![&web],
    };
    let backend = merged_timeout(&policies, &caller, "backend").unwrap();
    assert_eq!(backend.connection_timeout.as_deref(), Some("2s"));
    assert_eq!(backend.idle_timeout.as_deref(), Some("20m"));
    let http = backend.http.unwrap();
    assert_eq!(http.request_timeout.as_deref(), Some("1s"));
    // Not in the specific policy: the mesh-wide value stays.
    assert_eq!(http.stream_idle_timeout.as_deref(), Some("5m"));
    let other = merged_timeout(&policies, &caller, "other").unwrap();
    assert_eq!(other.http.unwrap().request_timeout.as_deref(), Some("10s"));
}

#[test]
fn order_follows_the_top_level_kind_then_the_name_reversed() {
    let labels = BTreeMap::new();
    let web = tags("web", &[("version", "v2")]);
    let caller = Caller {
        name: "web-1",
        labels: &labels,
        inbounds: vec![&web],
    };
    let p = |name: &str, top: &str, value: &str| {
        policy(&format!(
            "type: MeshTimeout\nmesh: default\nname: {name}\nspec:\n  targetRef: {top}\n  to:\n  - targetRef: {{kind: Mesh}}\n    default: {{connectionTimeout: {value}}}\n"
        ))
    };
    let connect = |ps: &[(String, Spec)]| {
        merged_timeout(ps, &caller, "backend").and_then(|c| c.connection_timeout)
    };
    // A MeshService top-level beats Mesh, whatever the names.
    let ps = vec![
        p("a", "{kind: Mesh}", "1s"),
        p("z", "{kind: MeshService, name: web}", "2s"),
    ];
    assert_eq!(connect(&ps).as_deref(), Some("2s"));
    // A MeshSubset beats a Dataplane (Kuma's kind order), which beats Mesh.
    let ps = vec![
        p("a", "{kind: Mesh}", "1s"),
        p("b", "{kind: Dataplane, name: web-1}", "2s"),
        p("c", "{kind: MeshSubset, tags: {version: v2}}", "3s"),
    ];
    assert_eq!(connect(&ps).as_deref(), Some("3s"));
    // Equally specific: the name that sorts first wins.
    let ps = vec![p("b", "{kind: Mesh}", "1s"), p("a", "{kind: Mesh}", "2s")];
    assert_eq!(connect(&ps).as_deref(), Some("2s"));
    // A policy whose top-level targetRef does not select the caller is out.
    let ps = vec![
        p("a", "{kind: Mesh}", "1s"),
        p("b", "{kind: MeshService, name: api}", "2s"),
        p("c", "{kind: Dataplane, name: web-2}", "3s"),
    ];
    assert_eq!(connect(&ps).as_deref(), Some("1s"));
}

#[test]
fn lists_are_replaced_not_appended() {
    let policies = [
        policy(
            "type: MeshRetry\nmesh: default\nname: all\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default:\n      http: {numRetries: 3, retryOn: [5XX, Reset]}\n",
        ),
        policy(
            "type: MeshRetry\nmesh: default\nname: backend\nspec:\n  to:\n  - targetRef: {kind: MeshService, name: backend}\n    default:\n      http: {retryOn: [GatewayError]}\n",
        ),
    ];
    let labels = BTreeMap::new();
    let caller = Caller {
        name: "web-1",
        labels: &labels,
        inbounds: vec![],
    };
    let conf: RetryConf = merged(
        policies
            .iter()
            .filter_map(|(n, s)| s.as_policy().map(|p| (n.as_str(), p))),
        &caller,
        "backend",
    )
    .unwrap();
    let http = conf.http.unwrap();
    assert_eq!(http.num_retries, Some(3));
    assert_eq!(http.retry_on, Some(vec!["GatewayError".to_string()]));
}

#[test]
fn no_applicable_policy_merges_to_nothing() {
    let labels = BTreeMap::new();
    let caller = Caller {
        name: "web-1",
        labels: &labels,
        inbounds: vec![],
    };
    assert_eq!(merged_timeout(&[], &caller, "backend"), None);
}

#[test]
fn inbound_defaults_merge_for_the_inbounds_a_policy_selects() {
    let policies = [
        policy(
            "type: MeshTimeout\nmesh: default\nname: all-inbounds\nspec:\n  targetRef: {kind: Mesh}\n  from:\n  - targetRef: {kind: Mesh}\n    default: {idleTimeout: 1h, http: {requestTimeout: 20s}}\n",
        ),
        policy(
            "type: MeshTimeout\nmesh: default\nname: backend-inbound\nspec:\n  targetRef: {kind: MeshService, name: backend}\n  rules:\n  - default: {http: {requestTimeout: 2s}}\n",
        ),
    ];
    let labels = BTreeMap::new();
    let subject = |tags: &'static BTreeMap<String, String>| crate::InboundSubject {
        tags,
        dataplane: "dp-1",
        labels: &labels,
        inbound_name: None,
        port: 8080,
    };
    let backend: &'static BTreeMap<String, String> = Box::leak(Box::new(tags("backend", &[])));
    let web: &'static BTreeMap<String, String> = Box::leak(Box::new(tags("web", &[])));
    let named = || {
        policies
            .iter()
            .filter_map(|(n, s)| s.as_policy().map(|p| (n.as_str(), p)))
    };
    let b: TimeoutConf = merged_inbound(named(), &subject(backend)).unwrap();
    assert_eq!(b.idle_timeout.as_deref(), Some("1h"));
    assert_eq!(b.http.unwrap().request_timeout.as_deref(), Some("2s"));
    let w: TimeoutConf = merged_inbound(named(), &subject(web)).unwrap();
    assert_eq!(w.http.unwrap().request_timeout.as_deref(), Some("20s"));
}

#[test]
fn inbound_sections_are_refused_by_outbound_only_types() {
    let e = crate::validation::errors_of(
        "type: MeshRetry\nmesh: default\nname: r\nspec:\n  from:\n  - targetRef: {kind: Mesh}\n    default: {http: {numRetries: 1}}\n",
    );
    assert!(e.contains("spec.from: must not be defined"), "{e}");
    let e = crate::validation::errors_of(
        "type: MeshTimeout\nmesh: default\nname: t\nspec:\n  rules:\n  - matches: [{spiffeID: {type: Exact, value: 'spiffe://default/web'}}]\n    default: {idleTimeout: 1s}\n  to:\n  - targetRef: {kind: Mesh}\n    default: {idleTimeout: 1s}\n",
    );
    assert!(e.contains("spec.rules[0].matches"), "{e}");
    assert!(e.contains("'to' and 'from' must be empty"), "{e}");
}

#[test]
fn health_check_fields_koguma_cannot_enforce_are_refused_by_name() {
    let e = crate::validation::errors_of(
        "type: MeshHealthCheck\nmesh: default\nname: hc\nspec:\n  to:\n  - targetRef: {kind: Mesh}\n    default: {failTrafficOnPanic: true, eventLogPath: /tmp/hc.log, http: {path: /health}}\n",
    );
    assert!(e.contains("spec.to[0].default.failTrafficOnPanic"), "{e}");
    assert!(e.contains("spec.to[0].default.eventLogPath"), "{e}");
}

#[test]
fn each_named_caller_gets_its_own_entry_over_the_every_caller_one() {
    use crate::policy::FaultInjectionConf;
    let policies = [
        policy(
            "type: MeshFaultInjection\nmesh: default\nname: faults\nspec:\n  targetRef: {kind: MeshService, name: backend}\n  from:\n  - targetRef: {kind: Mesh}\n    default:\n      http:\n      - delay: {value: 1s, percentage: 10}\n  - targetRef: {kind: MeshService, name: web}\n    default:\n      http:\n      - abort: {httpStatus: 402, percentage: 100}\n",
        ),
        policy(
            "type: MeshFaultInjection\nmesh: default\nname: other\nspec:\n  targetRef: {kind: Mesh}\n  from:\n  - targetRef: {kind: MeshService, name: other}\n    default:\n      http:\n      - abort: {httpStatus: 421, percentage: 100}\n",
        ),
    ];
    let named = || {
        policies
            .iter()
            .filter_map(|(n, s)| s.as_policy().map(|p| (n.as_str(), p)))
    };
    let (labels, backend) = (BTreeMap::new(), tags("backend", &[]));
    let subject = InboundSubject {
        tags: &backend,
        dataplane: "backend-1",
        labels: &labels,
        inbound_name: None,
        port: 8080,
    };
    let by_caller = merged_inbound_by_caller::<FaultInjectionConf>(named(), &subject);
    let summary: Vec<(Option<&str>, Option<i64>, bool)> = by_caller
        .iter()
        .map(|(caller, conf)| {
            let http = conf.http.as_deref().unwrap_or_default();
            (
                caller.as_deref(),
                http.iter()
                    .find_map(|f| f.abort.as_ref().map(|a| a.http_status)),
                http.iter().any(|f| f.delay.is_some()),
            )
        })
        .collect();
    // In policy order, as Kuma merges them: `other` (top-level Mesh)
    // before `faults` (MeshService). web's own list replaces the
    // every-caller one of its policy; other's comes first and is replaced
    // by `faults`' every-caller list (lists are replaced, not appended).
    assert_eq!(
        summary,
        vec![
            (Some("other"), None, true),
            (Some("web"), Some(402), false),
            (None, None, true),
        ]
    );
}
