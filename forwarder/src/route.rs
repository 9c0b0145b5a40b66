//! What a listener does with a connection, as one immutable snapshot: the
//! protocol, where traffic goes, and the stats it feeds. A config update
//! swaps in a new `Route`; connections keep the one they started with.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;

use crate::config::Protocol;
use crate::connector::{ClusterConnector, ClusterStream, UpstreamTls};
use crate::endpoints::{Endpoint, EndpointSet};
use crate::inbound::InboundMesh;
use crate::stats::{ClusterStats, ListenerStats};

/// What goes upstream: the downstream body, or nothing (which lets a
/// bodiless request be sent again after a connect failure).
pub type UpstreamBody = http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>;

pub type UpstreamClient = Client<ClusterConnector, UpstreamBody>;

/// One upstream cluster: its stats, its mesh mTLS client side and its
/// pooled HTTP clients, kept across config updates so that pooled
/// connections survive them.
pub struct Cluster {
    pub stats: Arc<ClusterStats>,
    pub tls: Arc<UpstreamTls>,
    pub connector: ClusterConnector,
    pub h1: UpstreamClient,
    pub h2: UpstreamClient,
}

impl Cluster {
    /// `source`: the address connections leave from, when it matters (the
    /// local application under transparent proxying).
    /// `sni`: the server name sent when the cluster has mesh mTLS.
    pub fn new(
        stats: Arc<ClusterStats>,
        connect_timeout: Duration,
        source: Option<IpAddr>,
        sni: Option<ServerName<'static>>,
    ) -> Cluster {
        let tls = Arc::new(UpstreamTls::empty());
        let connector = ClusterConnector {
            stats: stats.clone(),
            timeout: connect_timeout,
            tls: tls.clone(),
            source,
            sni,
        };
        let h1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(connector.clone());
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector.clone());
        Cluster {
            stats,
            tls,
            connector,
            h1,
            h2,
        }
    }

    /// Connects to the first endpoint that accepts among try number 0..
    /// `attempts` of `pick`, so that one dead endpoint does not fail the
    /// connection; the last error when none did.
    pub async fn connect_first(
        &self,
        attempts: usize,
        pick: impl Fn(usize) -> Option<SocketAddr>,
        timeout: Duration,
    ) -> io::Result<(SocketAddr, ClusterStream)> {
        let mut last = io::Error::new(io::ErrorKind::NotConnected, "no healthy upstream");
        for attempt in 0..attempts {
            let Some(addr) = pick(attempt) else {
                break;
            };
            match self.connector.connect(addr, timeout).await {
                Ok(s) => return Ok((addr, s)),
                Err(e) => {
                    tracing::warn!(upstream = %addr, error = %e, "upstream connect failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    pub fn client(&self, protocol: Protocol) -> &UpstreamClient {
        if protocol.upstream_h2() {
            &self.h2
        } else {
            &self.h1
        }
    }
}

pub enum Target {
    /// The local application behind an inbound.
    Local(Endpoint),
    /// The endpoints of an outbound service.
    Balanced(EndpointSet),
    /// A zone proxy: where each TLS server name goes.
    BySni(HashMap<String, SniTarget>),
}

/// Where a zone proxy sends the connections for one server name.
pub struct SniTarget {
    pub endpoints: EndpointSet,
    pub cluster: Arc<Cluster>,
    /// Set when mesh mTLS ends here.
    pub terminate: Option<Terminate>,
}

/// Mesh mTLS ends at the zone proxy; a connection of its own goes to a
/// host outside the mesh.
pub struct Terminate {
    /// This proxy's identity in the caller's mesh.
    pub tls: Arc<crate::tls::MeshTls>,
    pub permissions: crate::authz::Permissions,
    pub host: String,
    pub port: u16,
    pub upstream_tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

pub struct Route {
    pub name: String,
    pub protocol: Protocol,
    pub target: Target,
    pub listener_stats: Arc<ListenerStats>,
    pub cluster: Arc<Cluster>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Set on inbounds when mesh mTLS is on.
    pub mesh: Option<InboundMesh>,
    /// Why the target has no endpoints, when the CP said.
    pub unavailable: Option<Arc<str>>,
}

impl Route {
    /// The endpoint for try number `attempt` (from 0) of one connection
    /// or request: other endpoints of the same locality, then the next.
    pub fn pick_for(&self, attempt: usize) -> Option<&Endpoint> {
        match &self.target {
            Target::Local(endpoint) => (attempt == 0).then_some(endpoint),
            Target::Balanced(set) => set.pick_for(attempt),
            Target::BySni(_) => None,
        }
    }

    /// How many endpoints one connection or request may try when they
    /// refuse to connect.
    pub fn connect_attempts(&self) -> usize {
        match &self.target {
            Target::Local(_) => 1,
            Target::Balanced(set) => set.attempts(),
            Target::BySni(_) => 0,
        }
    }

    /// Connects to an upstream, moving on to the next endpoint when one
    /// refuses, so that one dead endpoint does not fail the connection.
    pub async fn connect(&self) -> io::Result<(SocketAddr, ClusterStream)> {
        let attempts = self.connect_attempts();
        let pick = |attempt| self.pick_for(attempt).map(|e| e.addr);
        let result = self
            .cluster
            .connect_first(attempts, pick, self.connect_timeout)
            .await;
        let Err(mut last) = result else {
            return result;
        };
        if attempts == 0 {
            self.cluster.stats.no_healthy_upstream.inc();
            if let Some(why) = &self.unavailable {
                last = io::Error::new(io::ErrorKind::NotConnected, why.to_string());
            }
        }
        Err(last)
    }
}
