//! What the forwarder is asked to run: already parsed and typed, so that
//! the data path never sees a string it would have to interpret.

use std::net::SocketAddr;

mod policy;
mod route;
mod traffic;

pub use koguma_types::{MtlsMode, PermissionAction, Protocol};
pub use policy::*;
pub use route::*;
pub use traffic::*;

#[derive(Debug, Clone, PartialEq)]
pub struct InboundConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub service: String,
    pub upstream: SocketAddr,
    pub protocol: Protocol,
    /// Who may call; enforced when mesh mTLS is on.
    pub permissions: Vec<PermissionRule>,
    /// MeshTimeout `from`/`rules`; else Kuma's inbound defaults.
    pub timeouts: Timeouts,
    /// MeshCircuitBreaker `from`/`rules` connection limits.
    pub limits: ConnectionLimits,
    /// MeshFaultInjection, MeshRateLimit, MeshAccessLog `from`/`rules`.
    pub traffic: ListenerTrafficConfig,
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
    /// Where traffic goes unless a route says otherwise.
    pub cluster: ClusterConfig,
    /// MeshHTTPRoute: the first rule whose match a request meets decides.
    pub http_routes: Vec<HttpRouteConfig>,
    /// MeshTCPRoute: connections split over these instead of `cluster`.
    pub tcp_backends: Vec<BackendConfig>,
    /// A service VIP: no socket of its own, reached through the transparent
    /// outbound listener by original destination.
    pub transparent: bool,
    /// MeshFaultInjection and MeshAccessLog `to` its service.
    pub traffic: ListenerTrafficConfig,
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
    /// Retries and outlier detection of the zone proxies, and what an
    /// outbound has when no policy sets its own.
    pub resilience: Resilience,
    /// MeshAccessLog on passthrough connections (transparent proxying).
    pub passthrough_access_logs: Vec<AccessLogConfig>,
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
            passthrough_access_logs: Vec::new(),
        }
    }
}
