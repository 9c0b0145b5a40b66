//! `MeshRetry`: when and how often a failed request or connection to a
//! destination is tried again (`pkg/plugins/policies/meshretry`).

use serde::{Deserialize, Serialize};

use super::{PolicyConf, check_duration};
use crate::headers::HeaderMatch;
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcRetry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connect_attempt: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off: Option<BackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_back_off: Option<RateLimitedBackOff>,
    /// `5XX`, `GatewayError`, `Reset`, `Retriable4xx`, `ConnectFailure`,
    /// `EnvoyRatelimited`, `RefusedStream`, `HttpMethod<METHOD>` or a
    /// status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable_response_headers: Option<Vec<HeaderMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable_request_headers: Option<Vec<HeaderMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selection: Option<Vec<HostPredicate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selection_max_attempts: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off: Option<BackOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_back_off: Option<RateLimitedBackOff>,
    /// `Canceled`, `DeadlineExceeded`, `Internal`, `ResourceExhausted`,
    /// `Unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackOff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitedBackOff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_headers: Option<Vec<ResetHeader>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetHeader {
    #[serde(default)]
    pub name: String,
    /// `Seconds` or `UnixTimestamp`.
    #[serde(default)]
    pub format: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPredicate {
    pub predicate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_frequency: Option<i64>,
}

/// Kuma's HTTP `retryOn` words; a status code is taken too.
pub const HTTP_RETRY_ON: &[&str] = &[
    "5XX",
    "GatewayError",
    "Reset",
    "Retriable4xx",
    "ConnectFailure",
    "EnvoyRatelimited",
    "RefusedStream",
    "Http3PostConnectFailure",
    "HttpMethodConnect",
    "HttpMethodDelete",
    "HttpMethodGet",
    "HttpMethodHead",
    "HttpMethodOptions",
    "HttpMethodPatch",
    "HttpMethodPost",
    "HttpMethodPut",
    "HttpMethodTrace",
];

pub const GRPC_RETRY_ON: &[&str] = &[
    "Canceled",
    "DeadlineExceeded",
    "Internal",
    "ResourceExhausted",
    "Unavailable",
];

fn check_back_off(field: &str, b: &Option<BackOff>, errs: &mut ValidationError) {
    let Some(b) = b else { return };
    if b.base_interval.is_none() && b.max_interval.is_none() {
        errs.add(field, "must not be empty");
    }
    check_duration(
        &format!("{field}.baseInterval"),
        &b.base_interval,
        true,
        errs,
    );
    check_duration(&format!("{field}.maxInterval"), &b.max_interval, true, errs);
}

fn check_rate_limited(field: &str, r: &Option<RateLimitedBackOff>, errs: &mut ValidationError) {
    let Some(r) = r else { return };
    check_duration(&format!("{field}.maxInterval"), &r.max_interval, true, errs);
    match &r.reset_headers {
        None => errs.add(format!("{field}.resetHeaders"), "must be defined"),
        Some(headers) => {
            for (i, h) in headers.iter().enumerate() {
                if h.name.is_empty() {
                    errs.add(
                        format!("{field}.resetHeaders[{i}].name"),
                        "must not be empty",
                    );
                }
                if !matches!(h.format.as_str(), "Seconds" | "UnixTimestamp") {
                    errs.add(
                        format!("{field}.resetHeaders[{i}].format"),
                        format!(
                            "unknown format '{}': use Seconds or UnixTimestamp",
                            h.format
                        ),
                    );
                }
            }
        }
    }
}

/// Whether `word` is a status code Kuma takes (`http.StatusText` knows it).
fn is_status_code(word: &str) -> bool {
    word.parse::<u16>()
        .ok()
        .and_then(|c| http_status_known(c).then_some(()))
        .is_some()
}

fn http_status_known(code: u16) -> bool {
    matches!(code, 100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451 | 500..=508 | 510 | 511)
}

impl PolicyConf for RetryConf {
    fn validate(&self, field: &str, errs: &mut ValidationError) {
        if self.tcp.is_none() && self.http.is_none() && self.grpc.is_none() {
            errs.add(
                field,
                "at least one of the 'tcp', 'http', 'grpc' must be specified",
            );
        }
        if let Some(tcp) = &self.tcp {
            match tcp.max_connect_attempt {
                None => errs.add(format!("{field}.tcp"), "must not be empty"),
                Some(0) => errs.add(
                    format!("{field}.tcp.maxConnectAttempt"),
                    "must be greater than 0",
                ),
                Some(_) => {}
            }
        }
        if let Some(http) = &self.http {
            let f = format!("{field}.http");
            if *http == HttpRetry::default() {
                errs.add(&f, "must not be empty");
            }
            check_duration(
                &format!("{f}.perTryTimeout"),
                &http.per_try_timeout,
                true,
                errs,
            );
            check_back_off(&format!("{f}.backOff"), &http.back_off, errs);
            check_rate_limited(
                &format!("{f}.rateLimitedBackOff"),
                &http.rate_limited_back_off,
                errs,
            );
            for (i, word) in http.retry_on.iter().flatten().enumerate() {
                if !HTTP_RETRY_ON.contains(&word.as_str()) && !is_status_code(word) {
                    errs.add(
                        format!("{f}.retryOn[{i}]"),
                        format!("unknown item '{word}'"),
                    );
                } else if word == "Http3PostConnectFailure" {
                    errs.add(
                        format!("{f}.retryOn[{i}]"),
                        "HTTP/3 is not supported by koguma",
                    );
                }
            }
            for (list, name) in [
                (&http.retriable_response_headers, "retriableResponseHeaders"),
                (&http.retriable_request_headers, "retriableRequestHeaders"),
            ] {
                for (i, m) in list.iter().flatten().enumerate() {
                    m.validate(&format!("{f}.{name}[{i}]"), errs);
                }
            }
            for (i, p) in http.host_selection.iter().flatten().enumerate() {
                // Every retry already goes to an endpoint not tried yet.
                if p.predicate != "OmitPreviousHosts" {
                    errs.add(
                        format!("{f}.hostSelection[{i}].predicate"),
                        format!("'{}' is not supported by this version of koguma (OmitPreviousHosts is)", p.predicate),
                    );
                }
            }
        }
        if let Some(grpc) = &self.grpc {
            let f = format!("{field}.grpc");
            if *grpc == GrpcRetry::default() {
                errs.add(&f, "must not be empty");
            }
            check_duration(
                &format!("{f}.perTryTimeout"),
                &grpc.per_try_timeout,
                true,
                errs,
            );
            check_back_off(&format!("{f}.backOff"), &grpc.back_off, errs);
            check_rate_limited(
                &format!("{f}.rateLimitedBackOff"),
                &grpc.rate_limited_back_off,
                errs,
            );
            for (i, word) in grpc.retry_on.iter().flatten().enumerate() {
                if !GRPC_RETRY_ON.contains(&word.as_str()) {
                    errs.add(
                        format!("{f}.retryOn[{i}]"),
                        format!("unknown item '{word}'"),
                    );
                }
            }
        }
    }
}
