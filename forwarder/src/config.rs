//! What the forwarder is asked to run: already parsed and typed, so that
//! the data path never sees a string it would have to interpret.

use std::net::SocketAddr;
use std::time::Duration;

pub use koguma_types::{MtlsMode, PermissionAction, Protocol};

#[derive(Debug, Clone, PartialEq)]
pub struct InboundConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub service: String,
    pub upstream: SocketAddr,
    pub protocol: Protocol,
    /// Who may call; enforced when mesh mTLS is on.
    pub permissions: Vec<PermissionRule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PermissionRule {
    pub action: PermissionAction,
    /// The caller must present every one of these URI SANs; empty: anyone
    /// of the mesh.
    pub required_uris: Vec<String>,
    /// The policy it comes from, for logs.
    pub policy: String,
    /// One of the caller's URI SANs must start with this (a SPIFFE ID
    /// prefix match).
    pub uri_prefix: Option<String>,
    /// The server name the caller sent must be this.
    pub sni: Option<String>,
}

/// A private key (PKCS#8 DER). Its `Debug` shows nothing of it, so that no
/// log line or config dump can carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(pub Vec<u8>);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// Mesh mTLS: this proxy's identity and the CA its peers chain to.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshTlsConfig {
    pub mode: MtlsMode,
    pub ca_certs: Vec<Vec<u8>>,
    /// Leaf first.
    pub cert_chain: Vec<Vec<u8>>,
    pub key: PrivateKey,
    /// "spiffe://<mesh>/": what every peer's certificate must name.
    pub peer_uri_prefix: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboundConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub service: String,
    pub protocol: Protocol,
    pub endpoints: Vec<EndpointConfig>,
    /// With mesh mTLS: the exact URI SAN the upstream must present.
    pub identity: Option<String>,
    /// With mesh mTLS: the server name sent, which zone proxies route by.
    pub sni: Option<String>,
    /// Why there are no endpoints, when the mesh's config is the reason.
    pub unavailable: Option<String>,
    /// A service VIP: no socket of its own, reached through the transparent
    /// outbound listener by original destination.
    pub transparent: bool,
}

/// Transparent proxying: the ports iptables redirects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransparentConfig {
    pub inbound_port: u16,
    pub outbound_port: u16,
    /// Listen on [::] too.
    pub ipv6: bool,
    /// Connections to addresses outside the mesh go to their original
    /// destination; otherwise they are refused.
    pub passthrough: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub addr: SocketAddr,
    pub weight: u32,
    /// Lower goes first (locality): 0 for this zone.
    pub priority: u32,
}

/// A zone ingress or egress: one listener, routes by TLS server name.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneProxyConfig {
    pub listen: SocketAddr,
    pub routes: Vec<SniRouteConfig>,
    /// Per mesh, the identity presented where mesh mTLS ends here.
    pub mesh_tls: Vec<(String, MeshTlsConfig)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SniRouteConfig {
    pub sni: String,
    /// Its stats' name (`<mesh>:<service>`).
    pub cluster: String,
    /// Passthrough: where the bytes go.
    pub endpoints: Vec<EndpointConfig>,
    /// Set when mesh mTLS ends here (an external service behind an egress).
    pub terminate: Option<TerminateConfig>,
}

/// Mesh mTLS ends at the zone proxy, which opens its own connection to a
/// host outside the mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct TerminateConfig {
    pub mesh: String,
    pub permissions: Vec<PermissionRule>,
    /// `host`, resolved when a connection comes.
    pub host: String,
    pub port: u16,
    pub tls: Option<UpstreamTlsConfig>,
}

/// TLS to a host outside the mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTlsConfig {
    /// PEM; `None`: the system's roots (/etc/ssl/certs/ca-certificates.crt).
    pub ca_pem: Option<String>,
    /// Sent and verified; the host when empty.
    pub server_name: String,
    pub skip_hostname_verification: bool,
    /// PEM certificate chain and key, when the host asks for a client
    /// certificate.
    pub client_cert_pem: Option<String>,
    /// PEM, kept in a `PrivateKey` so that no Debug output shows it.
    pub client_key_pem: Option<PrivateKey>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub inbounds: Vec<InboundConfig>,
    pub outbounds: Vec<OutboundConfig>,
    pub mtls: Option<MeshTlsConfig>,
    /// With transparent proxying, inbounds bind no socket of their own:
    /// the inbound redirect listener hands them connections by port.
    pub transparent: Option<TransparentConfig>,
    /// Set for a zone ingress or egress (which has no inbounds or outbounds).
    pub zone_proxy: Option<ZoneProxyConfig>,
    /// The timeouts of the outbounds (and zone proxies).
    pub outbound_timeouts: Timeouts,
    /// The timeouts of the inbounds.
    pub inbound_timeouts: Timeouts,
    /// Retries and outlier detection of the outbounds.
    pub resilience: Resilience,
}

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
}

impl Timeouts {
    pub const OUTBOUND: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        idle: Duration::from_secs(3600),
        request: Some(Duration::from_secs(15)),
        stream_idle: Duration::from_secs(30 * 60),
    };
    pub const INBOUND: Timeouts = Timeouts {
        connect: Duration::from_secs(10),
        idle: Duration::from_secs(2 * 3600),
        request: None,
        stream_idle: Duration::from_secs(3600),
    };
}

/// What keeps one failing endpoint from failing requests: retries on
/// another endpoint and taking the endpoint out for a while. The defaults
/// are those of the policies Kuma creates with every mesh
/// (`mesh-retry-all`, and outlier detection with Envoy's defaults), which
/// the MeshRetry and MeshCircuitBreaker policies will set per outbound.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resilience {
    pub retry: RetryPolicy,
    pub outlier: OutlierDetection,
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
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            num_retries: 5,
            max_connect_attempts: 5,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    /// Failures in a row (connect failures, resets, timeouts, 502/503/504)
    /// that take an endpoint out; 0: never.
    pub consecutive_failures: u32,
    /// Out for this long times the number of times it was out in a row.
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// At most this share of a service's endpoints is out at once; at
    /// least one may always be.
    pub max_ejection_percent: u32,
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
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            stalled_after: Some(Duration::from_secs(1)),
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            inbounds: Vec::new(),
            outbounds: Vec::new(),
            mtls: None,
            transparent: None,
            zone_proxy: None,
            outbound_timeouts: Timeouts::OUTBOUND,
            inbound_timeouts: Timeouts::INBOUND,
            resilience: Resilience::default(),
        }
    }
}
