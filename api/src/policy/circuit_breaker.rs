//! `MeshCircuitBreaker`: how much may be in flight to a destination, and
//! when one of its endpoints is taken out of rotation (passive outlier
//! detection), `pkg/plugins/policies/meshcircuitbreaker`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{PolicyConf, check_duration};
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limits: Option<ConnectionLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionConf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_pools: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetectionConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_and_local_errors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectors: Option<Detectors>,
    /// A percentage, as a number or a string ("50", "12.5").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_panic_threshold: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Detectors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_failures: Option<Consecutive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_failures: Option<Consecutive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_origin_failures: Option<Consecutive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_percentage: Option<FailurePercentage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Consecutive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuccessRate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_hosts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u32>,
    /// A number or a string ("1.9").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_deviation_factor: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailurePercentage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_hosts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
}

/// An int-or-string decimal's value.
pub fn decimal(value: &Option<Value>) -> Option<f64> {
    match value.as_ref()? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn positive(field: String, value: Option<u32>, errs: &mut ValidationError) {
    if value == Some(0) {
        errs.add(field, "must be greater than 0");
    }
}

impl PolicyConf for CircuitBreakerConf {
    const INBOUND: bool = true;

    fn validate(&self, field: &str, errs: &mut ValidationError) {
        if self.connection_limits.is_none() && self.outlier_detection.is_none() {
            errs.add(
                field,
                "at least one of: 'connectionLimits' or 'outlierDetection' should be configured",
            );
            return;
        }
        if let Some(l) = &self.connection_limits {
            let at = |f: &str| format!("{field}.connectionLimits.{f}");
            positive(at("maxConnections"), l.max_connections, errs);
            positive(at("maxConnectionPools"), l.max_connection_pools, errs);
            positive(at("maxPendingRequests"), l.max_pending_requests, errs);
            positive(at("maxRetries"), l.max_retries, errs);
            positive(at("maxRequests"), l.max_requests, errs);
        }
        let Some(od) = &self.outlier_detection else {
            return;
        };
        let at = |f: &str| format!("{field}.outlierDetection.{f}");
        check_duration(&at("interval"), &od.interval, true, errs);
        check_duration(&at("baseEjectionTime"), &od.base_ejection_time, true, errs);
        if od.max_ejection_percent.is_some_and(|p| p > 100) {
            errs.add(at("maxEjectionPercent"), "has to be in [0 - 100] range");
        }
        if od.healthy_panic_threshold.is_some() {
            match decimal(&od.healthy_panic_threshold) {
                Some(p) if (0.0..=100.0).contains(&p) => {}
                _ => errs.add(
                    at("healthyPanicThreshold"),
                    "has to be in [0.0 - 100.0] range",
                ),
            }
        }
        let Some(d) = &od.detectors else {
            if !od.disabled.unwrap_or(false) {
                errs.add(at("detectors"), "must be defined");
            }
            return;
        };
        if *d == Detectors::default() {
            errs.add(
                at("detectors"),
                "must have at least one defined: totalFailures, gatewayFailures, localOriginFailures, successRate, failurePercentage",
            );
            return;
        }
        let at = |f: &str| format!("{field}.outlierDetection.detectors.{f}");
        for (name, c) in [
            ("totalFailures", &d.total_failures),
            ("gatewayFailures", &d.gateway_failures),
            ("localOriginFailures", &d.local_origin_failures),
        ] {
            positive(
                at(&format!("{name}.consecutive")),
                c.as_ref().and_then(|c| c.consecutive),
                errs,
            );
        }
        if let Some(sr) = &d.success_rate {
            positive(at("successRate.minimumHosts"), sr.minimum_hosts, errs);
            positive(at("successRate.requestVolume"), sr.request_volume, errs);
            if sr.standard_deviation_factor.is_some() {
                match decimal(&sr.standard_deviation_factor) {
                    Some(f) if f > 0.0 => {}
                    Some(_) => errs.add(
                        at("successRate.standardDeviationFactor"),
                        "must be greater than 0",
                    ),
                    None => errs.add(at("successRate.standardDeviationFactor"), "invalid number"),
                }
            }
        }
        if let Some(fp) = &d.failure_percentage {
            positive(at("failurePercentage.minimumHosts"), fp.minimum_hosts, errs);
            positive(
                at("failurePercentage.requestVolume"),
                fp.request_volume,
                errs,
            );
            if fp.threshold.is_some_and(|t| t > 100) {
                errs.add(
                    at("failurePercentage.threshold"),
                    "has to be in [0 - 100] range",
                );
            }
        }
    }
}
