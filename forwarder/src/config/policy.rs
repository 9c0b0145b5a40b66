//! What the traffic policies set for one cluster, typed: timeouts
//! (MeshTimeout), retries (MeshRetry), limits and outlier detection
//! (MeshCircuitBreaker), active health checks (MeshHealthCheck) and the
//! load balancer (MeshLoadBalancingStrategy). The defaults are what Kuma
//! does when no policy applies.

use std::time::Duration;

/// Envoy's timeouts as Kuma sets them when no MeshTimeout applies
/// (`pkg/plugins/policies/meshtimeout`: the outbound default policy and
/// `DefaultInboundTimeout`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// To connect to an upstream.
    pub connect: Duration,
    /// A connection with nothing in flight and no bytes moving is closed
    /// after this long.
    pub idle: Duration,
    /// Envoy's route timeout: from the end of the request (its last body
    /// byte) to the response headers. `None`: off. A long upload is never
    /// cut by it while the client is still sending.
    pub request: Option<Duration>,
    /// A request whose body, response headers or response body do not move
    /// for this long is ended (408 before the response started, else a
    /// reset).
    pub stream_idle: Duration,
    /// The longest a request and its response may take in all (Envoy's
    /// `max_stream_duration`); `None`: no limit.
    pub max_stream_duration: Option<Duration>,
}

impl Timeouts {
    pub const OUTBOUND: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        idle: Duration::from_secs(3600),
        request: Some(Duration::from_secs(15)),
        stream_idle: Duration::from_secs(30 * 60),
        max_stream_duration: None,
    };
    pub const INBOUND: Timeouts = Timeouts {
        connect: Duration::from_secs(10),
        idle: Duration::from_secs(2 * 3600),
        request: None,
        stream_idle: Duration::from_secs(3600),
        max_stream_duration: None,
    };
}

/// What keeps one failing endpoint from failing requests: retries on
/// another endpoint, taking the endpoint out for a while, and limits on
/// what may be in flight. The defaults are those of the policies Kuma
/// creates with every mesh (`mesh-retry-all`) and Envoy's outlier
/// detection; no limits unless a MeshCircuitBreaker sets them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resilience {
    pub retry: RetryPolicy,
    pub outlier: OutlierDetection,
    pub limits: ConnectionLimits,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Tries of an HTTP request after the first (MeshRetry `http.numRetries`).
    pub num_retries: u32,
    /// Connection attempts of a TCP outbound, the first included
    /// (MeshRetry `tcp.maxConnectAttempt`).
    pub max_connect_attempts: u32,
    /// Wait before retry n: `base_interval` × 2ⁿ⁻¹, jittered, at most
    /// `max_interval` (MeshRetry `backOff`).
    pub base_interval: Duration,
    pub max_interval: Duration,
    /// How long one try may wait for its response headers; a try that
    /// takes longer counts as a 504 and may be retried. `None`: only the
    /// request timeout limits it.
    pub per_try_timeout: Option<Duration>,
    pub retry_on: RetryOn,
    /// A response with one of these headers is retried too.
    pub retriable_response_headers: Vec<HeaderMatcher>,
    /// Only requests with one of these headers are retried (empty: all).
    pub retriable_request_headers: Vec<HeaderMatcher>,
    /// MeshRetry `rateLimitedBackOff`: after a 429 (or an
    /// `x-envoy-ratelimited` answer), wait as long as these headers say.
    pub rate_limited: Option<RateLimitedBackOff>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            num_retries: 5,
            max_connect_attempts: 5,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
            per_try_timeout: None,
            retry_on: RetryOn::default(),
            retriable_response_headers: Vec::new(),
            retriable_request_headers: Vec::new(),
            rate_limited: None,
        }
    }
}

/// When a try's outcome is retried (MeshRetry `retryOn`, as Envoy reads
/// it).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryOn {
    /// Any 5xx (`5XX`).
    pub server_error: bool,
    /// 502, 503, 504 (`GatewayError`).
    pub gateway_error: bool,
    /// No response: a reset, a timeout of the try (`Reset`).
    pub reset: bool,
    /// The connection could not be made (`ConnectFailure`).
    pub connect_failure: bool,
    /// 409 (`Retriable4xx`).
    pub conflict: bool,
    /// An HTTP/2 stream the peer refused (`RefusedStream`).
    pub refused_stream: bool,
    /// A response with `x-envoy-ratelimited` (`EnvoyRatelimited`).
    pub rate_limited: bool,
    /// These statuses (`retriable-status-codes`).
    pub status_codes: Vec<u16>,
    /// gRPC responses with these `grpc-status` codes.
    pub grpc_statuses: Vec<u8>,
    /// Only these methods are retried (`HttpMethod*`); empty: any.
    pub methods: Vec<http::Method>,
    /// Failures the endpoint may have acted on (anything but a refused
    /// connection) are retried for idempotent methods only. Koguma's
    /// default, when no MeshRetry says which conditions to retry on.
    pub idempotent_only: bool,
}

impl Default for RetryOn {
    /// Kuma's HTTP default (`gateway-error,connect-failure,refused-stream`),
    /// plus resets, for idempotent requests.
    fn default() -> Self {
        RetryOn {
            server_error: false,
            gateway_error: true,
            reset: true,
            connect_failure: true,
            conflict: false,
            refused_stream: true,
            rate_limited: false,
            status_codes: Vec::new(),
            grpc_statuses: Vec::new(),
            methods: Vec::new(),
            idempotent_only: true,
        }
    }
}

impl RetryOn {
    /// No condition at all: what a policy that lists only methods starts
    /// from.
    pub fn none() -> RetryOn {
        RetryOn {
            gateway_error: false,
            reset: false,
            connect_failure: false,
            refused_stream: false,
            idempotent_only: false,
            ..RetryOn::default()
        }
    }
}

/// One header and how its value must look.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    /// Lower case.
    pub name: http::HeaderName,
    pub kind: HeaderMatchKind,
}

#[derive(Debug, Clone)]
pub enum HeaderMatchKind {
    Exact(String),
    Prefix(String),
    Regex(regex::Regex),
    Present,
    Absent,
}

impl PartialEq for HeaderMatcher {
    fn eq(&self, other: &Self) -> bool {
        use HeaderMatchKind::*;
        self.name == other.name
            && match (&self.kind, &other.kind) {
                (Exact(a), Exact(b)) | (Prefix(a), Prefix(b)) => a == b,
                (Regex(a), Regex(b)) => a.as_str() == b.as_str(),
                (Present, Present) | (Absent, Absent) => true,
                _ => false,
            }
    }
}

impl HeaderMatcher {
    pub fn matches(&self, headers: &http::HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter().peekable();
        match &self.kind {
            HeaderMatchKind::Present => values.peek().is_some(),
            HeaderMatchKind::Absent => values.peek().is_none(),
            HeaderMatchKind::Exact(want) => values.any(|v| v.as_bytes() == want.as_bytes()),
            HeaderMatchKind::Prefix(want) => {
                values.any(|v| v.as_bytes().starts_with(want.as_bytes()))
            }
            HeaderMatchKind::Regex(re) => {
                values.any(|v| v.to_str().is_ok_and(|v| full_match(re, v)))
            }
        }
    }
}

/// Envoy's regex matches are whole-value matches.
pub fn full_match(re: &regex::Regex, value: &str) -> bool {
    re.find(value)
        .is_some_and(|m| m.start() == 0 && m.end() == value.len())
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitedBackOff {
    /// Headers that say when to try again, first that parses wins.
    pub reset_headers: Vec<(http::HeaderName, ResetFormat)>,
    pub max_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetFormat {
    Seconds,
    UnixTimestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    /// Off: no endpoint is ever taken out by what its requests say.
    pub enabled: bool,
    /// Any 5xx or, unless split, local failure, this many times in a row
    /// (`totalFailures`); `None`: not checked.
    pub consecutive_5xx: Option<u32>,
    /// 502, 503, 504 or, unless split, a local failure (`gatewayFailures`).
    pub consecutive_gateway: Option<u32>,
    /// With `split_local`: connect failures, resets and timeouts
    /// (`localOriginFailures`).
    pub consecutive_local: Option<u32>,
    /// Local failures count apart from responses (`splitExternalAndLocalErrors`).
    pub split_local: bool,
    /// How often success rate and failure percentage are computed.
    pub interval: Duration,
    /// Out for this long times the number of times it was out in a row.
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// At most this share of a service's endpoints is out at once; at
    /// least one may always be.
    pub max_ejection_percent: u32,
    pub success_rate: Option<SuccessRateDetector>,
    pub failure_percentage: Option<FailurePercentageDetector>,
    /// Below this share of endpoints in rotation (percent), picks ignore
    /// health and spread over all of them (Envoy's panic mode). `None`:
    /// only once no endpoint is left in rotation (Koguma's default).
    pub panic_threshold: Option<f64>,
    /// An endpoint that answers nothing for this long, with two requests
    /// or more waiting on it, while the service's other endpoints answer,
    /// is frozen: it is taken out and its waiting requests go elsewhere
    /// (when they can be sent again). `None`: never. Envoy has no such
    /// detector; without it a frozen endpoint holds its share of requests
    /// until the request timeout.
    pub stalled_after: Option<Duration>,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            enabled: true,
            consecutive_5xx: None,
            consecutive_gateway: Some(5),
            consecutive_local: None,
            split_local: false,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            success_rate: None,
            failure_percentage: None,
            panic_threshold: None,
            stalled_after: Some(Duration::from_secs(1)),
        }
    }
}

/// Envoy's success-rate detector: an endpoint whose success rate is more
/// than `stdev_factor` standard deviations below the mean of its peers.
#[derive(Debug, Clone, PartialEq)]
pub struct SuccessRateDetector {
    pub minimum_hosts: u32,
    pub request_volume: u32,
    pub stdev_factor: f64,
}

/// Envoy's failure-percentage detector: an endpoint whose failures are at
/// least `threshold` percent of its requests.
#[derive(Debug, Clone, PartialEq)]
pub struct FailurePercentageDetector {
    pub minimum_hosts: u32,
    pub request_volume: u32,
    pub threshold: u32,
}

/// MeshCircuitBreaker `connectionLimits`; `None`: no limit. Requests in
/// flight are bounded by `max_requests` and, with both set, by
/// `max_connections + max_pending_requests`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ConnectionLimits {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

/// MeshHealthCheck: active checks of every endpoint of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub initial_jitter: Duration,
    pub interval_jitter: Duration,
    pub interval_jitter_percent: u32,
    pub always_log_failures: bool,
    pub kind: HealthCheckKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthCheckKind {
    /// Connect; send these bytes, then expect each of `receive` in what
    /// comes back.
    Tcp {
        send: Vec<u8>,
        receive: Vec<Vec<u8>>,
    },
    /// GET `path`; a status in `expected` (empty: 2xx) passes.
    Http {
        path: String,
        headers: Vec<(http::HeaderName, http::HeaderValue, bool)>,
        expected: Vec<u16>,
    },
    /// `grpc.health.v1.Health/Check` for `service`.
    Grpc { service: String, authority: String },
}

/// MeshLoadBalancingStrategy `loadBalancer`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum LoadBalancer {
    #[default]
    RoundRobin,
    /// The least busy of `choice_count` endpoints picked at random.
    LeastRequest {
        choice_count: u32,
    },
    Random,
    /// A hash of the request picks the endpoint, the same one for the same
    /// hash while the set does not change.
    RingHash {
        hash: Vec<HashPolicy>,
        min_ring_size: u64,
        max_ring_size: u64,
    },
    Maglev {
        hash: Vec<HashPolicy>,
        table_size: u64,
    },
}

/// What a request is hashed by; the first policy that yields a value
/// (or each until a `terminal` one does) makes the hash.
#[derive(Debug, Clone, PartialEq)]
pub struct HashPolicy {
    pub source: HashSource,
    pub terminal: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HashSource {
    Header(http::HeaderName),
    Cookie(String),
    SourceIp,
    QueryParameter(String),
}
