//! `MeshRateLimit`: local rate limits on an inbound
//! (`pkg/plugins/policies/meshratelimit`): HTTP requests, answered with a
//! status of its choice beyond the limit, and TCP connections, closed
//! beyond it. Each is Envoy's token bucket holding `num` tokens, refilled
//! to `num` every `interval`.

use serde::{Deserialize, Serialize};

use super::{PolicyConf, duration};
use crate::headers::HeaderModifier;
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalRateLimit>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpRateLimit>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rate_limit: Option<OnRateLimit>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_rate: Option<Rate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rate {
    pub num: u32,
    pub interval: String,
}

impl Rate {
    /// `num` per `interval` (validated: more than 50 ms).
    pub fn per(&self) -> Option<(u32, std::time::Duration)> {
        duration(&Some(self.interval.clone())).map(|d| (self.num, d))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnRateLimit {
    /// The status of the answer beyond the limit; 429 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    /// `set` and `add` (Kuma has no `remove` here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderModifier>,
}

fn check_rate(field: String, rate: &Rate, errs: &mut ValidationError) {
    if rate.num == 0 {
        errs.add(format!("{field}.num"), "must be greater than 0");
    }
    match crate::duration::parse_duration(&rate.interval) {
        Err(e) => errs.add(format!("{field}.interval"), e),
        Ok(d) if d <= std::time::Duration::from_millis(50) => errs.add(
            format!("{field}.interval"),
            format!("must be greater than: 50ms, got {:?}", rate.interval),
        ),
        Ok(_) => {}
    }
}

impl PolicyConf for RateLimitConf {
    const INBOUND: bool = true;
    const OUTBOUND: bool = false;

    fn validate(&self, field: &str, errs: &mut ValidationError) {
        let at = |f: &str| format!("{field}.local{f}");
        let Some(local) = &self.local else {
            errs.add(at(""), "must be defined");
            return;
        };
        if local.http.is_none() && local.tcp.is_none() {
            errs.add(at(""), "must have at least one defined: tcp, http");
        }
        if let Some(http) = &local.http {
            if http.disabled.is_none()
                && http.request_rate.is_none()
                && http.on_rate_limit.is_none()
            {
                errs.add(
                    at(".http"),
                    "must have at least one defined: disabled, requestRate, onRateLimit",
                );
            }
            if let Some(rate) = &http.request_rate {
                check_rate(at(".http.requestRate"), rate, errs);
            }
            let on = http.on_rate_limit.as_ref();
            if let Some(status) = on.and_then(|o| o.status)
                && !(100..600).contains(&status)
            {
                errs.add(
                    at(".http.onRateLimit.status"),
                    format!("must be an HTTP status in [100, 599], got {status}"),
                );
            }
            if let Some(headers) = on.and_then(|o| o.headers.as_ref()) {
                let field = at(".http.onRateLimit.headers");
                headers.validate(&field, errs);
                if !headers.remove.is_empty() {
                    errs.add(
                        format!("{field}.remove"),
                        "is not a field here: only set and add",
                    );
                }
            }
        }
        if let Some(tcp) = &local.tcp {
            if tcp.disabled.is_none() && tcp.connection_rate.is_none() {
                errs.add(
                    at(".tcp"),
                    "must have at least one defined: disabled, connectionRate",
                );
            }
            if let Some(rate) = &tcp.connection_rate {
                check_rate(at(".tcp.connectionRate"), rate, errs);
            }
        }
    }
}
