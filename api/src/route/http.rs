//! `MeshHTTPRoute`: per destination, rules that match requests (path,
//! method, headers, query parameters) and send them to weighted backends
//! through filters (header modifiers, redirect, URL rewrite, mirror),
//! `pkg/plugins/policies/meshhttproute`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{BackendRef, validate_to, validate_top};
use crate::headers::{HeaderMatch, HeaderModifier};
use crate::policy::merge::merge_patch;
use crate::policy::{AnyPolicy, json_items};
use crate::registry::SpecType;
use crate::target_ref::TargetRef;
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshHttpRoute {
    pub spec: HttpRouteSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub to: Vec<HttpRouteTo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTo {
    pub target_ref: TargetRef,
    /// Gateways only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    pub matches: Vec<HttpMatch>,
    #[serde(default)]
    pub default: HttpRuleConf,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_params: Option<Vec<QueryParamsMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HeaderMatch>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    /// Exact, PathPrefix or RegularExpression.
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParamsMatch {
    /// Exact or RegularExpression.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRuleConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<HttpFilter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<BackendRef>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFilter {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "urlRewrite"
    )]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathRewrite {
    /// ReplaceFullPath or ReplacePrefixMatch.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_to_backend_hostname: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirror {
    pub backend_ref: BackendRef,
    /// Percent of requests, a number or a string ("12.5").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Value>,
}

const METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];
const STATUSES: &[u16] = &[301, 302, 303, 307, 308];

fn validate_path(field: &str, p: &PathMatch, errs: &mut ValidationError) {
    match p.kind.as_str() {
        "Exact" | "PathPrefix" if !p.value.starts_with('/') => {
            errs.add(format!("{field}.value"), "must be an absolute path");
        }
        "PathPrefix" if p.value.len() > 1 && p.value.ends_with('/') => errs.add(
            format!("{field}.value"),
            "does not need a trailing slash because only a `/`-separated prefix or an entire path is matched",
        ),
        "Exact" | "PathPrefix" => {}
        "RegularExpression" => {
            if let Err(e) = regex::Regex::new(&p.value) {
                errs.add(format!("{field}.value"), format!("invalid regular expression: {e}"));
            }
        }
        other => errs.add(
            format!("{field}.type"),
            format!("unknown type '{other}': use Exact, PathPrefix or RegularExpression"),
        ),
    }
}

fn validate_match(field: &str, m: &HttpMatch, errs: &mut ValidationError) {
    if let Some(p) = &m.path {
        validate_path(&format!("{field}.path"), p, errs);
    }
    if let Some(method) = &m.method
        && !METHODS.contains(&method.as_str())
    {
        errs.add(
            format!("{field}.method"),
            format!("unknown method '{method}'"),
        );
    }
    for (i, h) in m.headers.iter().flatten().enumerate() {
        let f = format!("{field}.headers[{i}]");
        h.validate(&f, errs);
        if matches!(h.kind(), "Present" | "Absent") && h.value.is_some() {
            errs.add(format!("{f}.value"), "must not be defined");
        }
    }
    let mut names = Vec::new();
    for (i, q) in m.query_params.iter().flatten().enumerate() {
        let f = format!("{field}.queryParams[{i}]");
        if names.contains(&q.name.as_str()) {
            errs.add(&f, format!("multiple entries for name {}", q.name));
        }
        names.push(q.name.as_str());
        match q.kind.as_str() {
            "Exact" => {}
            "RegularExpression" => {
                if let Err(e) = regex::Regex::new(&q.value) {
                    errs.add(
                        format!("{f}.value"),
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
            other => errs.add(
                format!("{f}.type"),
                format!("unknown type '{other}': use Exact or RegularExpression"),
            ),
        }
    }
}

fn validate_rewrite_path(
    field: &str,
    p: &PathRewrite,
    all_prefix: bool,
    errs: &mut ValidationError,
) {
    match p.kind.as_str() {
        "ReplaceFullPath" if p.replace_full_path.is_none() => errs.add(
            format!("{field}.replaceFullPath"),
            "must be set with type ReplaceFullPath",
        ),
        "ReplacePrefixMatch" if p.replace_prefix_match.is_none() => errs.add(
            format!("{field}.replacePrefixMatch"),
            "must be set with type ReplacePrefixMatch",
        ),
        "ReplacePrefixMatch" if !all_prefix => errs.add(
            format!("{field}.replacePrefixMatch"),
            "can only appear if all matches match a path prefix",
        ),
        "ReplaceFullPath" | "ReplacePrefixMatch" => {}
        other => errs.add(
            format!("{field}.type"),
            format!("unknown type '{other}': use ReplaceFullPath or ReplacePrefixMatch"),
        ),
    }
}

fn validate_filter(field: &str, f: &HttpFilter, matches: &[HttpMatch], errs: &mut ValidationError) {
    let all_prefix = !matches.is_empty()
        && matches
            .iter()
            .all(|m| m.path.as_ref().is_some_and(|p| p.kind == "PathPrefix"));
    let need = |set: bool, name: &str, errs: &mut ValidationError| {
        if !set {
            errs.add(format!("{field}.{name}"), "must be defined");
        }
    };
    match f.kind.as_str() {
        "RequestHeaderModifier" => match &f.request_header_modifier {
            Some(m) => m.validate(&format!("{field}.requestHeaderModifier"), errs),
            None => need(false, "requestHeaderModifier", errs),
        },
        "ResponseHeaderModifier" => match &f.response_header_modifier {
            Some(m) => m.validate(&format!("{field}.responseHeaderModifier"), errs),
            None => need(false, "responseHeaderModifier", errs),
        },
        "RequestRedirect" => match &f.request_redirect {
            None => need(false, "requestRedirect", errs),
            Some(r) => {
                let at = format!("{field}.requestRedirect");
                if let Some(p) = &r.path {
                    validate_rewrite_path(&format!("{at}.path"), p, all_prefix, errs);
                }
                if r.scheme.as_deref().is_some_and(|s| s != "http" && s != "https") {
                    errs.add(format!("{at}.scheme"), "must be http or https");
                }
                if r.status_code.is_some_and(|s| !STATUSES.contains(&s)) {
                    errs.add(format!("{at}.statusCode"), "must be one of 301, 302, 303, 307, 308");
                }
                if r.port.is_some_and(|p| p == 0 || p > 65535) {
                    errs.add(format!("{at}.port"), "must be in the range [1, 65535]");
                }
            }
        },
        "URLRewrite" => match &f.url_rewrite {
            None => need(false, "urlRewrite", errs),
            Some(r) => {
                let at = format!("{field}.urlRewrite");
                if let Some(p) = &r.path {
                    validate_rewrite_path(&format!("{at}.path"), p, all_prefix, errs);
                }
                if r.host_to_backend_hostname.is_some() {
                    errs.add(format!("{at}.hostToBackendHostname"), "can only be set with MeshGateway");
                }
            }
        },
        "RequestMirror" => match &f.request_mirror {
            None => need(false, "requestMirror", errs),
            Some(m) => {
                let at = format!("{field}.requestMirror");
                m.backend_ref.validate(&format!("{at}.backendRef"), errs);
                if m.percentage.is_some()
                    && !crate::policy::decimal(&m.percentage).is_some_and(|p| (0.0..=100.0).contains(&p))
                {
                    errs.add(format!("{at}.percentage"), "has to be in [0.0 - 100.0] range");
                }
            }
        },
        other => errs.add(
            format!("{field}.type"),
            format!("unknown type '{other}': use RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite or RequestMirror"),
        ),
    }
}

impl SpecType for MeshHttpRoute {
    fn validate(&self, errs: &mut ValidationError) {
        validate_top(self.spec.target_ref.as_ref(), self.spec.to.len(), errs);
        for (i, to) in self.spec.to.iter().enumerate() {
            let field = format!("spec.to[{i}]");
            validate_to(&format!("{field}.targetRef"), &to.target_ref, errs);
            if to.hostnames.is_some() {
                errs.add(
                    format!("{field}.hostnames"),
                    "must not be defined: only for MeshGateway",
                );
            }
            for (j, rule) in to.rules.iter().enumerate() {
                let f = format!("{field}.rules[{j}]");
                if rule.matches.is_empty() {
                    errs.add(format!("{f}.matches"), "must not be empty");
                }
                for (k, m) in rule.matches.iter().enumerate() {
                    validate_match(&format!("{f}.matches[{k}]"), m, errs);
                }
                for (k, filter) in rule.default.filters.iter().flatten().enumerate() {
                    validate_filter(
                        &format!("{f}.default.filters[{k}]"),
                        filter,
                        &rule.matches,
                        errs,
                    );
                }
                if let Some(refs) = &rule.default.backend_refs {
                    for (k, b) in refs.iter().enumerate() {
                        b.validate(&format!("{f}.default.backendRefs[{k}]"), errs);
                    }
                }
            }
        }
    }

    fn as_policy(&self) -> Option<&dyn AnyPolicy> {
        Some(self)
    }
}

impl AnyPolicy for MeshHttpRoute {
    fn target_ref(&self) -> Option<&TargetRef> {
        self.spec.target_ref.as_ref()
    }

    fn to_items(&self) -> Vec<(&TargetRef, Value)> {
        json_items(self.spec.to.iter().map(|t| (&t.target_ref, &t.rules)))
    }
}

/// One entry of a destination's route table: a single match and what a
/// request that meets it gets.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteEntry {
    pub matched: HttpMatch,
    pub conf: HttpRuleConf,
}

/// The route table of a destination from the rules of its applicable
/// policies (`applicable` order, least specific first): rules with equal
/// `matches` merge (the more specific policy's fields win), then each
/// match becomes one entry, ordered as Gateway API orders them (exact path
/// before prefix, longer prefix first, then method, more headers, more
/// query parameters); among equals the more specific policy's first.
pub fn route_table(applicable: Vec<Value>) -> Vec<RouteEntry> {
    let mut merged: Vec<(Vec<HttpMatch>, Value)> = Vec::new();
    for rules in applicable.into_iter().rev() {
        let Ok(rules) = serde_json::from_value::<Vec<Value>>(rules) else {
            continue;
        };
        for rule in rules {
            let Ok(parsed) = serde_json::from_value::<HttpRouteRule>(rule.clone()) else {
                continue;
            };
            let conf = rule.get("default").cloned().unwrap_or(Value::Null);
            match merged.iter_mut().find(|(m, _)| *m == parsed.matches) {
                // Seen in a more specific policy: that one's fields win.
                Some((_, existing)) => {
                    let mut base = conf;
                    merge_patch(&mut base, existing.clone());
                    *existing = base;
                }
                None => merged.push((parsed.matches, conf)),
            }
        }
    }
    let mut table: Vec<RouteEntry> = Vec::new();
    for (matches, conf) in merged {
        let conf: HttpRuleConf = serde_json::from_value(conf).unwrap_or_default();
        for m in matches {
            table.push(RouteEntry {
                matched: m,
                conf: conf.clone(),
            });
        }
    }
    table.sort_by(|a, b| compare_match(&a.matched, &b.matched));
    table
}

fn compare_match(a: &HttpMatch, b: &HttpMatch) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let rank = |p: &PathMatch| match p.kind.as_str() {
        "Exact" => 0,
        "PathPrefix" => 1,
        _ => 2,
    };
    let path = match (&a.path, &b.path) {
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        (None, None) => Equal,
        (Some(x), Some(y)) => rank(x).cmp(&rank(y)).then_with(|| {
            if rank(x) == 0 {
                Equal
            } else {
                y.value.len().cmp(&x.value.len())
            }
        }),
    };
    let headers = |m: &HttpMatch| m.headers.as_ref().map_or(0, Vec::len);
    let queries = |m: &HttpMatch| m.query_params.as_ref().map_or(0, Vec::len);
    path.then_with(|| b.method.is_some().cmp(&a.method.is_some()))
        .then_with(|| headers(b).cmp(&headers(a)))
        .then_with(|| queries(b).cmp(&queries(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Value {
        serde_json::to_value(serde_yaml_ng::from_str::<Vec<HttpRouteRule>>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn the_table_orders_by_specificity_and_merges_equal_matches() {
        let mesh_wide = rules(
            "- matches: [{path: {type: PathPrefix, value: /}}]\n  default: {backendRefs: [{kind: MeshService, name: a}]}\n- matches: [{path: {type: PathPrefix, value: /api}}]\n  default:\n    backendRefs: [{kind: MeshService, name: a}]\n    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: '1'}]}}]\n",
        );
        let specific = rules(
            "- matches: [{path: {type: PathPrefix, value: /api}}]\n  default: {backendRefs: [{kind: MeshService, name: b}]}\n- matches: [{path: {type: Exact, value: /api/v1}}, {path: {type: PathPrefix, value: /api}, method: GET}]\n  default: {backendRefs: [{kind: MeshService, name: c}]}\n",
        );
        let table = route_table(vec![mesh_wide, specific]);
        let desc: Vec<String> = table
            .iter()
            .map(|e| {
                let p = e.matched.path.clone().unwrap_or_default();
                let to = e.conf.backend_refs.clone().unwrap_or_default()[0]
                    .target
                    .name
                    .clone()
                    .unwrap_or_default();
                format!(
                    "{} {} {}->{to}",
                    p.kind,
                    p.value,
                    e.matched.method.clone().unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(
            desc,
            [
                "Exact /api/v1 ->c",
                "PathPrefix /api GET->c",
                "PathPrefix /api ->b",
                "PathPrefix / ->a",
            ]
        );
        // /api merged: the specific backend, the mesh-wide filter kept.
        let api = &table[2].conf;
        assert_eq!(api.filters.as_ref().map(Vec::len), Some(1));
    }
}
