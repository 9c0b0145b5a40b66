//! `MeshFaultInjection`: HTTP faults a proxy makes up on purpose, to see
//! how callers cope (`pkg/plugins/policies/meshfaultinjection`). Each entry
//! of `http` is one of Envoy's fault filters, applied in order: a delay, an
//! abort, a response bandwidth limit, each to its share of the requests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{PolicyConf, check_duration, decimal};
use crate::target_ref::{KIND_MESH, KIND_MESH_SERVICE};
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjectionConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<FaultConf>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_bandwidth: Option<ResponseBandwidth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Abort {
    pub http_status: i64,
    /// 0–100, a number or a decimal string ("50.5").
    #[serde(default)]
    pub percentage: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delay {
    pub value: String,
    #[serde(default)]
    pub percentage: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseBandwidth {
    /// "10kbps", "5Mbps", "1Gbps".
    pub limit: String,
    #[serde(default)]
    pub percentage: Option<Value>,
}

impl ResponseBandwidth {
    /// The limit in kbps as Kuma hands it to Envoy (`limit_kbps`, which
    /// Envoy reads as KiB/s); `None` when it does not parse.
    pub fn kbps(&self) -> Option<u64> {
        bandwidth_kbps(&self.limit)
    }
}

/// "10kbps" → 10, "5Mbps" → 5000, "1Gbps" → 1000000 (Kuma's
/// `ConvertBandwidthToKbps`).
pub fn bandwidth_kbps(limit: &str) -> Option<u64> {
    let digits = limit.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let factor = match &limit[digits.len()..] {
        "kbps" => 1,
        "Mbps" => 1_000,
        "Gbps" => 1_000_000,
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

/// A percentage field: defined and within 0–100.
pub(crate) fn check_percentage(field: String, value: &Option<Value>, errs: &mut ValidationError) {
    match value {
        None => errs.add(field, "must be defined"),
        Some(_) => match decimal(value) {
            None => errs.add(field, "string must be a valid number"),
            Some(p) if !(0.0..=100.0).contains(&p) => {
                errs.add(field, "must be in inclusive range [0, 100]")
            }
            Some(_) => {}
        },
    }
}

impl PolicyConf for FaultInjectionConf {
    const INBOUND: bool = true;
    const TO_KINDS: &'static [&'static str] = &[KIND_MESH];
    const FROM_KINDS: &'static [&'static str] = &[KIND_MESH, KIND_MESH_SERVICE];

    fn validate(&self, field: &str, errs: &mut ValidationError) {
        for (i, fault) in self.http.iter().flatten().enumerate() {
            let at = |f: &str| format!("{field}.http[{i}].{f}");
            if let Some(abort) = &fault.abort {
                if !(100..600).contains(&abort.http_status) {
                    errs.add(
                        at("abort.httpStatus"),
                        "must be in inclusive range [100, 599]",
                    );
                }
                check_percentage(at("abort.percentage"), &abort.percentage, errs);
            }
            if let Some(delay) = &fault.delay {
                check_duration(&at("delay.value"), &Some(delay.value.clone()), false, errs);
                check_percentage(at("delay.percentage"), &delay.percentage, errs);
            }
            if let Some(bw) = &fault.response_bandwidth {
                if bw.limit.is_empty() {
                    errs.add(at("responseBandwidth.limit"), "must be defined");
                } else if bw.kbps().is_none() {
                    errs.add(
                        at("responseBandwidth.limit"),
                        format!("must be in kbps/Mbps/Gbps units, got {:?}", bw.limit),
                    );
                }
                check_percentage(at("responseBandwidth.percentage"), &bw.percentage, errs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bandwidth_kbps;

    #[test]
    fn bandwidth_units_convert_as_kuma_does() {
        assert_eq!(bandwidth_kbps("10kbps"), Some(10));
        assert_eq!(bandwidth_kbps("5Mbps"), Some(5_000));
        assert_eq!(bandwidth_kbps("1Gbps"), Some(1_000_000));
        assert_eq!(bandwidth_kbps("10mbps"), None);
        assert_eq!(bandwidth_kbps("kbps"), None);
        assert_eq!(bandwidth_kbps("1.5Mbps"), None);
    }
}
