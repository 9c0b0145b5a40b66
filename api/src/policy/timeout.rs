//! `MeshTimeout`: how long connections and requests to a destination may
//! take (`pkg/plugins/policies/meshtimeout`).

use serde::{Deserialize, Serialize};

use super::{PolicyConf, check_duration, not_supported};
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpTimeouts>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stream_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers_timeout: Option<String>,
}

impl PolicyConf for TimeoutConf {
    const INBOUND: bool = true;

    fn validate(&self, field: &str, errs: &mut ValidationError) {
        if self.connection_timeout.is_none() && self.idle_timeout.is_none() && self.http.is_none() {
            errs.add(field, "at least one timeout should be configured");
            return;
        }
        let at = |f: &str| format!("{field}.{f}");
        check_duration(
            &at("connectionTimeout"),
            &self.connection_timeout,
            true,
            errs,
        );
        check_duration(&at("idleTimeout"), &self.idle_timeout, false, errs);
        let Some(http) = &self.http else { return };
        let at = |f: &str| format!("{field}.http.{f}");
        check_duration(&at("requestTimeout"), &http.request_timeout, false, errs);
        check_duration(
            &at("streamIdleTimeout"),
            &http.stream_idle_timeout,
            false,
            errs,
        );
        check_duration(
            &at("maxStreamDuration"),
            &http.max_stream_duration,
            false,
            errs,
        );
        // Outbound connections are pooled without an age limit, and header
        // reads are timed on inbounds only: refused, not ignored.
        not_supported(
            &at("maxConnectionDuration"),
            &http.max_connection_duration,
            errs,
        );
        not_supported(
            &at("requestHeadersTimeout"),
            &http.request_headers_timeout,
            errs,
        );
    }
}
