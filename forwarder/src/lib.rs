//! Koguma's data path. A [`Forwarder`] owns the listeners of one dataplane
//! and reconciles them against each [`ProxyConfig`] it is given: new sockets
//! are bound before anything changes (so a config that cannot be applied
//! changes nothing), kept sockets get the new routes behind an `ArcSwap`,
//! and removed ones stop accepting while their connections finish.

pub mod access_log;
mod authz;
mod config;
mod connector;
mod copy;
pub mod drain;
mod endpoints;
mod error;
mod fault;
mod forwarder;
mod health_check;
mod http;
mod inbound;
mod listener;
mod outlier;
mod plan;
mod rate_limit;
mod route;
mod routing;
mod socket;
pub mod stats;
mod stream_body;
mod tcp;
mod tls;
mod traffic;
mod transparent;
mod zone_proxy;

pub use config::{
    AccessLogConfig, Fault, FaultRule, ListenerTrafficConfig, LogFormat, RateLimitConfig,
    SinkConfig,
};
pub use config::{
    BackendConfig, ClusterConfig, ConnectionLimits, EndpointConfig, FailurePercentageDetector,
    FilterConfig, HashPolicy, HashSource, HeaderMatchKind, HeaderMatcher, HeaderModifierConfig,
    HealthCheck, HealthCheckKind, HttpRouteConfig, InboundConfig, LoadBalancer, MeshTlsConfig,
    MtlsMode, OutboundConfig, OutlierDetection, PathMatchConfig, PathRewriteConfig,
    PermissionAction, PermissionRule, PrivateKey, Protocol, ProxyConfig, QueryMatchConfig,
    QueryValue, RateLimitedBackOff, RedirectConfig, RequestMatchConfig, ResetFormat, Resilience,
    RetryOn, RetryPolicy, RewriteConfig, SniRouteConfig, SuccessRateDetector, TerminateConfig,
    Timeouts, TransparentConfig, UpstreamTlsConfig, ZoneProxyConfig,
};
pub use endpoints::EndpointSet;
pub use error::ForwarderError;
pub use forwarder::Forwarder;
pub use stats::Stats;
pub use tls::verify::{cert_sha256, uri_sans};
