//! What the forwarder is asked to run: already parsed and typed, so that
//! the data path never sees a string it would have to interpret.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Http,
    Http2,
    Grpc,
}

impl Protocol {
    /// Whether requests are proxied at L7.
    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }

    /// Whether the upstream hop speaks HTTP/2 (prior knowledge).
    pub fn upstream_h2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InboundConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub service: String,
    pub upstream: SocketAddr,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboundConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub service: String,
    pub protocol: Protocol,
    pub endpoints: Vec<EndpointConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub inbounds: Vec<InboundConfig>,
    pub outbounds: Vec<OutboundConfig>,
    /// How long to wait for an upstream connection (Kuma's MeshTimeout default: 5 s).
    pub connect_timeout: Duration,
    /// How long to wait for an upstream's response headers (Kuma's default: 15 s).
    pub request_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            inbounds: Vec::new(),
            outbounds: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
        }
    }
}
