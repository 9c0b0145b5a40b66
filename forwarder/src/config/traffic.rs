//! What a listener does to its own traffic besides forwarding it:
//! MeshFaultInjection's faults, MeshRateLimit's buckets and MeshAccessLog's
//! sinks, typed (formats parsed, headers named) before they reach the data
//! path.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use koguma_types::log_format::Piece;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListenerTrafficConfig {
    /// The first rule whose caller matches applies.
    pub faults: Vec<FaultRule>,
    pub http_rate_limit: Option<RateLimitConfig>,
    pub tcp_rate_limit: Option<RateLimitConfig>,
    pub access_logs: Vec<AccessLogConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// The caller's URI SAN ("spiffe://<mesh>/<service>"); `None`: any.
    pub caller: Option<String>,
    pub faults: Vec<Fault>,
}

/// One of Envoy's fault filters: each part applies to its share (0–100 %)
/// of the requests, drawn independently.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(http::StatusCode, f64)>,
    /// Bytes per second of the response body.
    pub bandwidth: Option<(u64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub num: u32,
    pub interval: Duration,
    /// HTTP: the answer beyond the limit.
    pub status: http::StatusCode,
    /// HTTP: headers on that answer (`true`: added beside one of the same
    /// name rather than replacing it).
    pub headers: Vec<(HeaderName, HeaderValue, bool)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub sink: SinkConfig,
    pub format: LogFormat,
}

/// Where lines go. Sinks are shared by every listener that names the
/// same one, and kept across configs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SinkConfig {
    File(PathBuf),
    /// host:port; each line is written to one TCP connection, reopened
    /// when it breaks.
    Tcp(String),
    /// host:port of an OTLP/gRPC logs collector, with the resource
    /// attributes of every record.
    Otel {
        endpoint: String,
        resource: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogFormat {
    /// A line (ending in a newline).
    Plain(Vec<Piece>),
    Json {
        entries: Vec<(String, Vec<Piece>)>,
        omit_empty: bool,
    },
    /// An OpenTelemetry record: its body and attributes.
    Otel {
        body: Vec<Piece>,
        attributes: Vec<(String, Vec<Piece>)>,
    },
}

impl LogFormat {
    /// Every piece of the format, for finding what a record must carry.
    pub fn pieces(&self) -> Box<dyn Iterator<Item = &Piece> + '_> {
        match self {
            LogFormat::Plain(p) => Box::new(p.iter()),
            LogFormat::Json { entries, .. } => Box::new(entries.iter().flat_map(|(_, p)| p)),
            LogFormat::Otel { body, attributes } => {
                Box::new(body.iter().chain(attributes.iter().flat_map(|(_, p)| p)))
            }
        }
    }
}
