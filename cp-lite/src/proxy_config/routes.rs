//! MeshHTTPRoute and MeshTCPRoute for one dataplane's traffic to one
//! service: the route table (the engine's applicable rules, merged by
//! matches and ordered as Gateway API orders them) and the clusters its
//! backends need: other services' shared clusters, and subset clusters
//! (`MeshServiceSubset`: the service's endpoints with the given tags),
//! named `<service>-<hash of tags>` and counted as their service.

use std::collections::BTreeMap;

use koguma_api::policy::decimal;
use koguma_api::policy::merge::Caller;
use koguma_api::route::{BackendRef, HttpFilter, HttpMatch, PathRewrite, TcpRuleConf, route_table};
use koguma_api::{Protocol, ResourceType, Selector};
use koguma_proto::v1 as pb;

use super::cluster_policy::MeshPolicies;
use super::index::MeshContext;

/// What an outbound to one service routes by, and the clusters it needs
/// beyond its service's own.
#[derive(Default)]
pub struct OutboundRoutes {
    pub http: Vec<pb::HttpRouteRule>,
    pub tcp: Vec<pb::WeightedCluster>,
    /// Other services whose shared cluster a backend names.
    pub services: Vec<String>,
    /// Subset clusters, whole.
    pub subsets: Vec<pb::Cluster>,
}

/// The routes of `caller`'s traffic to `service`, which speaks `protocol`.
pub fn for_outbound(
    ctx: &MeshContext,
    policies: &MeshPolicies,
    caller: &Caller<'_>,
    service: &str,
    protocol: Protocol,
) -> OutboundRoutes {
    let mut out = OutboundRoutes::default();
    let tcp: Option<TcpRuleConf> = policies.merged(ResourceType::MeshTCPRoute, caller, service);
    if protocol.is_http() {
        let table = route_table(policies.applicable(ResourceType::MeshHTTPRoute, caller, service));
        for entry in table {
            let backends = entry.conf.backend_refs.clone().unwrap_or_default();
            let rule = pb::HttpRouteRule {
                r#match: Some(route_match(&entry.matched)),
                filters: entry
                    .conf
                    .filters
                    .iter()
                    .flatten()
                    .filter_map(|f| filter(f, ctx, policies, caller, &mut out))
                    .collect(),
                backends: backends
                    .iter()
                    .map(|b| resolve(b, ctx, policies, caller, &mut out))
                    .collect(),
            };
            out.http.push(rule);
        }
        // A TCP route on an HTTP destination with no HTTP route: its split
        // for every request (Kuma's rule: the HTTP route wins when both).
        if out.http.is_empty()
            && let Some(tcp) = &tcp
        {
            let backends = tcp
                .backend_refs
                .iter()
                .map(|b| resolve(b, ctx, policies, caller, &mut out))
                .collect();
            out.http.push(pb::HttpRouteRule {
                r#match: Some(pb::RouteMatch::default()),
                filters: Vec::new(),
                backends,
            });
        }
    } else if let Some(tcp) = &tcp {
        out.tcp = tcp
            .backend_refs
            .iter()
            .map(|b| resolve(b, ctx, policies, caller, &mut out))
            .collect();
    }
    out
}

fn route_match(m: &HttpMatch) -> pb::RouteMatch {
    pb::RouteMatch {
        path_kind: m.path.as_ref().map(|p| p.kind.clone()).unwrap_or_default(),
        path: m.path.as_ref().map(|p| p.value.clone()).unwrap_or_default(),
        method: m.method.clone().unwrap_or_default(),
        headers: m
            .headers
            .iter()
            .flatten()
            .map(|h| pb::HeaderMatch {
                kind: h.kind().to_string(),
                name: h.name.to_ascii_lowercase(),
                value: h.value.clone().unwrap_or_default(),
            })
            .collect(),
        query: m
            .query_params
            .iter()
            .flatten()
            .map(|q| pb::QueryMatch {
                kind: q.kind.clone(),
                name: q.name.clone(),
                value: q.value.clone(),
            })
            .collect(),
    }
}

fn header_modifier(m: &koguma_api::headers::HeaderModifier) -> pb::HeaderModifier {
    let values = |list: &[koguma_api::headers::HeaderKeyValue], append: bool| {
        list.iter()
            .map(|kv| pb::HeaderValue {
                name: kv.name.to_ascii_lowercase(),
                value: kv.value.clone(),
                append,
            })
            .collect()
    };
    pb::HeaderModifier {
        set: values(&m.set, false),
        add: values(&m.add, true),
        remove: m.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    }
}

fn rewrite_path(p: &Option<PathRewrite>) -> (Option<String>, Option<String>) {
    match p {
        Some(p) if p.kind == "ReplaceFullPath" => (p.replace_full_path.clone(), None),
        Some(p) => (None, p.replace_prefix_match.clone()),
        None => (None, None),
    }
}

fn filter(
    f: &HttpFilter,
    ctx: &MeshContext,
    policies: &MeshPolicies,
    caller: &Caller<'_>,
    out: &mut OutboundRoutes,
) -> Option<pb::RouteFilter> {
    use pb::route_filter::Filter;
    let filter = match f.kind.as_str() {
        "RequestHeaderModifier" => {
            Filter::RequestHeaders(header_modifier(f.request_header_modifier.as_ref()?))
        }
        "ResponseHeaderModifier" => {
            Filter::ResponseHeaders(header_modifier(f.response_header_modifier.as_ref()?))
        }
        "RequestRedirect" => {
            let r = f.request_redirect.as_ref()?;
            let (full_path, prefix) = rewrite_path(&r.path);
            Filter::Redirect(pb::Redirect {
                scheme: r.scheme.clone().unwrap_or_default(),
                hostname: r.hostname.clone().unwrap_or_default(),
                full_path,
                prefix,
                port: r.port.unwrap_or(0),
                status: u32::from(r.status_code.unwrap_or(302)),
            })
        }
        "URLRewrite" => {
            let r = f.url_rewrite.as_ref()?;
            let (full_path, prefix) = rewrite_path(&r.path);
            Filter::Rewrite(pb::Rewrite {
                hostname: r.hostname.clone().unwrap_or_default(),
                full_path,
                prefix,
            })
        }
        "RequestMirror" => {
            let m = f.request_mirror.as_ref()?;
            let target = resolve(&m.backend_ref, ctx, policies, caller, out);
            Filter::Mirror(pb::Mirror {
                cluster: target.cluster,
                percentage: decimal(&m.percentage).unwrap_or(100.0),
            })
        }
        _ => return None,
    };
    Some(pb::RouteFilter {
        filter: Some(filter),
    })
}

/// The cluster a backend ref names, adding what it needs to `out`; an
/// unknown service resolves to nothing, with why.
fn resolve(
    b: &BackendRef,
    ctx: &MeshContext,
    policies: &MeshPolicies,
    caller: &Caller<'_>,
    out: &mut OutboundRoutes,
) -> pb::WeightedCluster {
    let weight = b.weight();
    let unresolved = |why: String| pb::WeightedCluster {
        cluster: String::new(),
        weight,
        unresolved: why,
    };
    let (service, tags) = match b.target.selector() {
        Some(Selector::Service(s)) => (s, BTreeMap::new()),
        Some(Selector::ServiceSubset(s, tags)) => (s, tags),
        _ => return unresolved(format!("backend {:?} is not a service", b.target.kind)),
    };
    let Some(entry) = ctx.services.get(&service) else {
        return unresolved(format!("no service {service:?} in the mesh"));
    };
    if tags.is_empty() {
        if !out.services.contains(&service) {
            out.services.push(service.clone());
        }
        return pb::WeightedCluster {
            cluster: service,
            weight,
            unresolved: String::new(),
        };
    }
    let name = subset_name(&service, &tags);
    if !out.subsets.iter().any(|c| c.name == name) {
        let mut cluster = entry.cluster.clone();
        cluster.name = name.clone();
        cluster.stats_name = service.clone();
        cluster
            .endpoints
            .retain(|e| tags.iter().all(|(k, v)| e.tags.get(k) == Some(v)));
        cluster.policy = policies.for_caller(caller, &service, entry.protocol);
        out.subsets.push(cluster);
    }
    pb::WeightedCluster {
        cluster: name,
        weight,
        unresolved: String::new(),
    }
}

/// `<service>-<8 hex of its tags>`: stable for the same tags.
fn subset_name(service: &str, tags: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in tags {
        for b in k.bytes().chain([b'=']).chain(v.bytes()).chain([b';']) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{service}-{:08x}", h as u32)
}
