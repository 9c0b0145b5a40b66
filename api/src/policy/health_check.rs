//! `MeshHealthCheck`: active checks of a destination's endpoints; one that
//! fails them leaves the rotation until it passes again
//! (`pkg/plugins/policies/meshhealthcheck`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::circuit_breaker::decimal;
use super::{PolicyConf, check_duration, not_supported};
use crate::headers::HeaderModifier;
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_jitter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_jitter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_jitter_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_panic_threshold: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_traffic_on_panic: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_log_health_check_failures: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_traffic_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_connection: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Base64 bytes sent once connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// Base64 byte strings that must each be found in what comes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_to_add: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_statuses: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

impl PolicyConf for HealthCheckConf {
    fn validate(&self, field: &str, errs: &mut ValidationError) {
        let at = |f: &str| format!("{field}.{f}");
        check_duration(&at("interval"), &self.interval, true, errs);
        check_duration(&at("timeout"), &self.timeout, true, errs);
        check_duration(&at("initialJitter"), &self.initial_jitter, true, errs);
        check_duration(&at("intervalJitter"), &self.interval_jitter, true, errs);
        check_duration(
            &at("noTrafficInterval"),
            &self.no_traffic_interval,
            true,
            errs,
        );
        for (name, v) in [
            ("unhealthyThreshold", self.unhealthy_threshold),
            ("healthyThreshold", self.healthy_threshold),
        ] {
            if v == Some(0) {
                errs.add(at(name), "must be greater than 0");
            }
        }
        if self.interval_jitter_percent.is_some_and(|p| p > 100) {
            errs.add(at("intervalJitterPercent"), "has to be in [0 - 100] range");
        }
        if self.healthy_panic_threshold.is_some()
            && !decimal(&self.healthy_panic_threshold).is_some_and(|p| (0.0..=100.0).contains(&p))
        {
            errs.add(
                at("healthyPanicThreshold"),
                "has to be in [0.0 - 100.0] range",
            );
        }
        // Health check events go to the log; a file of their own is not kept.
        not_supported(&at("eventLogPath"), &self.event_log_path, errs);
        // Below the panic threshold traffic goes to every endpoint; failing
        // it instead is not built.
        if self.fail_traffic_on_panic == Some(true) {
            errs.add(
                at("failTrafficOnPanic"),
                "is not supported by this version of koguma",
            );
        }
        if let Some(http) = &self.http {
            if http.path.as_deref() == Some("") {
                errs.add(at("http.path"), "must not be empty");
            } else if http.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                errs.add(at("http.path"), "must start with /");
            }
            for (i, s) in http.expected_statuses.iter().flatten().enumerate() {
                if !(100..600).contains(s) {
                    errs.add(
                        at(&format!("http.expectedStatuses[{i}]")),
                        "must be in the range [100, 600)",
                    );
                }
            }
            if let Some(m) = &http.request_headers_to_add {
                m.validate(&at("http.requestHeadersToAdd"), errs);
            }
        }
        if let Some(tcp) = &self.tcp {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD;
            if tcp.send.as_ref().is_some_and(|s| b64.decode(s).is_err()) {
                errs.add(at("tcp.send"), "must be base64");
            }
            for (i, r) in tcp.receive.iter().flatten().enumerate() {
                if b64.decode(r).is_err() {
                    errs.add(at(&format!("tcp.receive[{i}]")), "must be base64");
                }
            }
        }
        if self.http.is_none() && self.tcp.is_none() && self.grpc.is_none() {
            errs.add(field, "must have at least one defined: http, tcp, grpc");
        }
    }
}
