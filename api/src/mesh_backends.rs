//! The Mesh's `logging`, `tracing` and `metrics` backends and its dataplane
//! membership `constraints`, validated as Kuma's `mesh_validator.go` does
//! (a backend's `conf` is reported as `config`, in Kuma's words).
//! Constraints are enforced when a dataplane joins (`MeshSpec::admits`).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tags::{TagRules, validate_tags};
use crate::validation::ValidationError;

/// The Mesh's `logging` and `tracing`: backends and the default one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backends {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_backend: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
}

/// A logging, tracing or metrics backend: its `conf` depends on its type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Logging: the access log line's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Tracing: the percentage of requests traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<Value>,
}

impl Backend {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Constraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_proxy: Option<DataplaneProxyConstraints>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataplaneProxyConstraints {
    /// A dataplane's inbounds must each match one of these, when any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requirements: Vec<TagsRule>,
    /// ... and none of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<TagsRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagsRule {
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::tags::deserialize_tags"
    )]
    pub tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcpConf {
    #[serde(default)]
    address: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileConf {
    #[serde(default)]
    path: Option<String>,
}

// Kuma reads a conf leniently (unknown fields are dropped); the fields it
// takes are declared so that a wrong type is refused.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinConf {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default, rename = "traceId128bit")]
    trace_id_128bit: Option<bool>,
    #[serde(default)]
    shared_span_context: Option<bool>,
}

// Kuma reads a conf leniently (unknown fields are dropped); the fields it
// takes are declared so that a wrong type is refused.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DatadogConf {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u32>,
    #[serde(default)]
    split_service: Option<bool>,
}

// Kuma reads a conf leniently (unknown fields are dropped); the fields it
// takes are declared so that a wrong type is refused.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrometheusConf {
    #[serde(default)]
    port: Option<u32>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default, rename = "skipMTLS")]
    skip_mtls: Option<bool>,
    #[serde(default)]
    tls: Option<PrometheusTls>,
    #[serde(default)]
    envoy: Option<Value>,
    #[serde(default)]
    tags: Option<Value>,
    #[serde(default)]
    aggregate: Vec<Aggregate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrometheusTls {
    #[serde(default)]
    mode: Option<String>,
}

// Kuma reads a conf leniently (unknown fields are dropped); the fields it
// takes are declared so that a wrong type is refused.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Aggregate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    port: Option<u32>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    address: Option<String>,
}

/// A backend's `conf` as `T`, or Kuma's "could not parse config" at `field`.
fn conf<T: DeserializeOwned>(
    backend: &Backend,
    field: &str,
    errs: &mut ValidationError,
) -> Option<T> {
    let value = backend
        .conf
        .clone()
        .unwrap_or(Value::Object(Default::default()));
    match serde_json::from_value(value) {
        Ok(c) => Some(c),
        Err(e) => {
            errs.add(field, format!("could not parse config: {e}"));
            None
        }
    }
}

/// Backend names must be unique; `default` must name one.
fn check_names(
    path: &str,
    backends: &[Backend],
    default: Option<&str>,
    default_field: &str,
    default_message: &str,
    errs: &mut ValidationError,
) {
    let mut used: Vec<&str> = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        if used.contains(&b.name()) {
            errs.add(
                format!("{path}.backends[{i}].name"),
                format!("{:?} name is already used for another backend", b.name()),
            );
        }
        used.push(b.name());
    }
    if let Some(d) = default.filter(|d| !d.is_empty())
        && !used.contains(&d)
    {
        errs.add(format!("{path}.{default_field}"), default_message);
    }
}

impl Backends {
    /// Names, then each backend by `check` (given the backend, its path
    /// and its `config` path), then the default.
    fn validate_each(
        &self,
        path: &str,
        default_message: &str,
        errs: &mut ValidationError,
        check: impl Fn(&Backend, &str, &str, &mut ValidationError),
    ) {
        for (i, b) in self.backends.iter().enumerate() {
            let at = format!("{path}.backends[{i}]");
            if b.name().is_empty() {
                errs.add(format!("{at}.name"), "cannot be empty");
            }
            check(b, &at, &format!("{at}.config"), errs);
        }
        check_names(
            path,
            &self.backends,
            self.default_backend.as_deref(),
            "defaultBackend",
            default_message,
            errs,
        );
    }

    /// `logging`: file and tcp backends.
    pub fn validate_logging(&self, errs: &mut ValidationError) {
        let message = "has to be set to one of the logging backend in mesh";
        self.validate_each("logging", message, errs, |b, at, config, errs| {
            match b.kind.as_str() {
                "file" => {
                    if let Some(c) = conf::<FileConf>(b, config, errs)
                        && c.path.as_deref().unwrap_or("").is_empty()
                    {
                        errs.add(format!("{config}.path"), "cannot be empty");
                    }
                }
                "tcp" => {
                    if let Some(c) = conf::<TcpConf>(b, config, errs) {
                        let address = c.address.unwrap_or_default();
                        if address.is_empty() {
                            errs.add(format!("{config}.address"), "cannot be empty");
                        } else if !is_host_port(&address) {
                            errs.add(
                                format!("{config}.address"),
                                "has to be in format of HOST:PORT",
                            );
                        }
                    }
                }
                _ => errs.add(
                    format!("{at}.type"),
                    r#"unknown backend type. Available backends: "tcp", "file""#,
                ),
            }
        });
    }

    /// `tracing`: zipkin and datadog backends.
    pub fn validate_tracing(&self, errs: &mut ValidationError) {
        let message = "has to be set to one of the tracing backend in mesh";
        self.validate_each("tracing", message, errs, |b, at, config, errs| {
            if b.sampling.is_some_and(|s| !(0.0..=100.0).contains(&s)) {
                errs.add(format!("{at}.sampling"), "has to be in [0.0 - 100.0] range");
            }
            match b.kind.as_str() {
                "zipkin" => {
                    if let Some(c) = conf::<ZipkinConf>(b, config, errs) {
                        check_zipkin(c, config, errs);
                    }
                }
                "datadog" => {
                    if let Some(c) = conf::<DatadogConf>(b, config, errs) {
                        if c.address.as_deref().unwrap_or("").is_empty() {
                            errs.add(format!("{config}.address"), "cannot be empty");
                        }
                        let port = c.port.unwrap_or(0);
                        if port == 0 || port > 65535 {
                            errs.add(
                                format!("{config}.port"),
                                "port must be in the range [1, 65535]",
                            );
                        }
                    }
                }
                _ => errs.add(
                    format!("{at}.type"),
                    r#"unknown backend type. Available backends: "zipkin", "datadog""#,
                ),
            }
        });
    }
}

fn check_zipkin(c: ZipkinConf, config: &str, errs: &mut ValidationError) {
    if let Some(v) = c.api_version.filter(|v| !v.is_empty())
        && !matches!(v.as_str(), "httpJsonV1" | "httpJson" | "httpProto")
    {
        errs.add(
            format!("{config}.apiVersion"),
            "has invalid value. Allowed values: httpJsonV1, httpJson, httpProto",
        );
    }
    let url = c.url.unwrap_or_default();
    if url.is_empty() {
        errs.add(format!("{config}.url"), "cannot be empty");
        return;
    }
    match url_port(&url) {
        Err(()) => errs.add(format!("{config}.url"), "invalid URL"),
        Ok(false) => errs.add(
            format!("{config}.url"),
            "port has to be explicitly specified",
        ),
        Ok(true) => {}
    }
}

impl Metrics {
    pub fn validate(&self, errs: &mut ValidationError) {
        for (i, b) in self.backends.iter().enumerate() {
            let at = format!("metrics.backends[{i}]");
            if b.kind != "prometheus" {
                errs.add(
                    format!("{at}.type"),
                    r#"unknown backend type. Available backends: "prometheus""#,
                );
                continue;
            }
            let field = format!("{at}.conf");
            let Some(c) = conf::<PrometheusConf>(b, &field, errs) else {
                continue;
            };
            // Both may be given only when they say the same thing.
            if let (Some(skip), Some(tls)) = (c.skip_mtls, &c.tls) {
                let mode = tls.mode.as_deref().unwrap_or("activeMTLSBackend");
                let same = (!skip && mode == "activeMTLSBackend") || (skip && mode == "disabled");
                if !same {
                    errs.add(
                        &field,
                        "skipMTLS and tls configuration cannot be defined together",
                    );
                    continue;
                }
            }
            let mut seen: Vec<&str> = Vec::new();
            for (j, a) in c.aggregate.iter().enumerate() {
                let name = a.name.as_deref().unwrap_or("");
                if seen.contains(&name) {
                    errs.add(
                        format!("{field}.aggregate[{j}].name"),
                        format!("duplicate entry: {name}, values have to be unique"),
                    );
                } else {
                    seen.push(name);
                }
            }
        }
        check_names(
            "metrics",
            &self.backends,
            self.enabled_backend.as_deref(),
            "enabledBackend",
            "has to be set to one of the backends in the mesh",
            errs,
        );
    }
}

impl Constraints {
    pub fn validate(&self, errs: &mut ValidationError) {
        let Some(dp) = &self.dataplane_proxy else {
            return;
        };
        for (list, rules) in [
            ("requirements", &dp.requirements),
            ("restrictions", &dp.restrictions),
        ] {
            for (i, rule) in rules.iter().enumerate() {
                let path = format!("constraints.dataplaneProxy.{list}[{i}].tags");
                if rule.tags.is_empty() {
                    errs.add(&path, "must have at least one tag");
                }
                let rules = TagRules {
                    selector: true,
                    ..TagRules::default()
                };
                validate_tags(&path, &rule.tags, rules, errs);
            }
        }
    }

    /// Kuma's membership check (`membership_validator.go`): each inbound's
    /// tags must match a requirement (when there are any) and no
    /// restriction; `*` matches any non-empty value.
    pub fn admits(&self, inbound_tags: &[&BTreeMap<String, String>]) -> Result<(), String> {
        let Some(dp) = &self.dataplane_proxy else {
            return Ok(());
        };
        let matches = |want: &BTreeMap<String, String>, have: &BTreeMap<String, String>| {
            want.iter().all(|(k, v)| {
                let got = have.get(k).map_or("", String::as_str);
                (v == "*" && !got.is_empty()) || got == v
            })
        };
        let show = |tags: &BTreeMap<String, String>| {
            tags.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        for tags in inbound_tags {
            if !dp.requirements.is_empty()
                && !dp.requirements.iter().any(|r| matches(&r.tags, tags))
            {
                return Err(format!(
                    "its tags {:?} do not fulfill any requirement of the mesh's constraints.dataplaneProxy.requirements",
                    show(tags)
                ));
            }
            if let Some(r) = dp.restrictions.iter().find(|r| matches(&r.tags, tags)) {
                return Err(format!(
                    "its tags {:?} match the restricted tags {:?} of the mesh's constraints.dataplaneProxy.restrictions",
                    show(tags),
                    show(&r.tags)
                ));
            }
        }
        Ok(())
    }
}

/// `HOST:PORT` as Go's `net.SplitHostPort` takes it, both parts non-empty.
fn is_host_port(address: &str) -> bool {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((h, p)) => (h, p),
            None => return false,
        }
    } else {
        match address.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p),
            _ => return false,
        }
    };
    !host.is_empty() && !port.is_empty()
}

/// Whether an absolute URL (Go's `url.ParseRequestURI`) names its port;
/// `Err` when it is not one.
fn url_port(url: &str) -> Result<bool, ()> {
    let (scheme, rest) = url.split_once("://").ok_or(())?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains(' ') {
        return Err(());
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split_once(']').map(|(_, p)| p.trim_start_matches(':'))
    } else {
        host_port.rsplit_once(':').map(|(_, p)| p)
    };
    match port {
        Some(p) if !p.is_empty() => p.parse::<u16>().map(|_| true).map_err(|_| ()),
        _ => Ok(false),
    }
}
