//! What a listener does with a connection, as one immutable snapshot: the
//! protocol, where traffic goes, and the stats it feeds. A config update
//! swaps in a new `Route`; connections keep the one they started with.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;

use crate::config::{
    ConnectionLimits, EndpointConfig, HealthCheck, OutlierDetection, Protocol, Resilience, Timeouts,
};
use crate::connector::{ClusterConnector, ClusterStream, UpstreamTls};
use crate::endpoints::{Endpoint, EndpointSet, PickKey};
use crate::health_check::HealthChecks;
use crate::inbound::InboundMesh;
use crate::outlier::{self, EndpointHealth, HealthRegistry, Outcome};
use crate::stats::{ClusterStats, ListenerStats};
use crate::stream_body::RequestBody;

/// What goes upstream: the downstream body streaming through, or a copy
/// (nothing, or a small body read whole) that a retry can send again.
pub type UpstreamBody = http_body_util::Either<RequestBody, http_body_util::Full<bytes::Bytes>>;

pub type UpstreamClient = Client<ClusterConnector, UpstreamBody>;

/// A pooled HTTP client whose connections close after `idle` unused.
fn client(connector: ClusterConnector, h2: bool, idle: Duration) -> UpstreamClient {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(idle)
        .pool_timer(TokioTimer::new());
    if h2 {
        builder.http2_only(true).timer(TokioTimer::new());
    }
    builder.build(connector)
}

/// One upstream cluster: its stats, its mesh mTLS client side and its
/// pooled HTTP clients, kept across config updates so that pooled
/// connections survive them.
pub struct Cluster {
    pub stats: Arc<ClusterStats>,
    /// How long a pooled connection may sit unused: the route's idle
    /// timeout (Envoy's cluster `idle_timeout`, 1 h by default under Kuma),
    /// so that connections between sidecars, and the handshakes they cost,
    /// outlive quiet minutes.
    pool_idle: Duration,
    pub tls: Arc<UpstreamTls>,
    pub connector: ClusterConnector,
    /// HTTP/1.1 requests, pooled by the endpoint address in their URI;
    /// over HTTP/2 to a Koguma peer under mesh mTLS (one shared
    /// connection per endpoint).
    pub h1: UpstreamClient,
    /// Clients bound to one endpoint each, whatever the request URI's
    /// authority: for requests that carry their own authority upstream
    /// (HTTP/2's `:authority`, CONNECT's target). By endpoint and whether
    /// HTTP/2.
    pinned: RwLock<HashMap<(SocketAddr, bool), UpstreamClient>>,
    /// What recent requests said of each endpoint.
    pub health: HealthRegistry,
    /// Active health checks, when a MeshHealthCheck asks for them.
    checks: HealthChecks,
}

impl Cluster {
    /// `source`: the address connections leave from, when it matters (the
    /// local application under transparent proxying).
    /// `sni`: the server name sent when the cluster has mesh mTLS.
    pub fn new(
        stats: Arc<ClusterStats>,
        timeouts: &Timeouts,
        source: Option<IpAddr>,
        sni: Option<ServerName<'static>>,
    ) -> Cluster {
        let tls = Arc::new(UpstreamTls::empty());
        let pool_idle = timeouts.idle;
        let connector = ClusterConnector {
            stats: stats.clone(),
            timeout: timeouts.connect,
            tls: tls.clone(),
            source,
            sni,
            pinned: None,
            offer_h2: false,
            max_connections: Arc::default(),
        };
        let h1 = client(
            ClusterConnector {
                offer_h2: true,
                ..connector.clone()
            },
            false,
            pool_idle,
        );
        Cluster {
            stats,
            pool_idle,
            tls,
            connector,
            h1,
            pinned: RwLock::default(),
            health: HealthRegistry::default(),
            checks: HealthChecks::default(),
        }
    }

    /// MeshCircuitBreaker's `maxConnections`, for the next connections.
    pub fn set_limits(&self, limits: &ConnectionLimits) {
        self.connector.max_connections.store(
            limits.max_connections.unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Runs the active health checks `cfg` asks for over `endpoints`.
    pub fn health_checks(&self, cfg: Option<&HealthCheck>, endpoints: &[EndpointConfig]) {
        self.checks
            .update(cfg, endpoints, &self.connector, &self.health);
    }

    /// Drops the pinned clients (and their pooled connections) of
    /// endpoints that left the cluster.
    pub fn retain_pinned(&self, keep: impl Fn(SocketAddr) -> bool) {
        let mut map = self.pinned.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|(addr, _), _| keep(*addr));
    }

    /// The client whose connections all go to `addr`.
    pub fn pinned_client(&self, addr: SocketAddr, h2: bool) -> UpstreamClient {
        let key = (addr, h2);
        if let Some(c) = self
            .pinned
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return c.clone();
        }
        let mut map = self.pinned.write().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| client(self.connector.pinned_to(addr), h2, self.pool_idle))
            .clone()
    }

    /// Connects to the first endpoint of `set` that accepts, trying at
    /// most `tcp.maxConnectAttempt` different ones, so that one dead
    /// endpoint does not fail the connection; the last error when none
    /// did. Outcomes count towards the endpoints' ejection.
    pub async fn connect_first(
        &self,
        set: &EndpointSet,
        key: &PickKey,
        resilience: &Resilience,
        timeout: Duration,
    ) -> io::Result<(SocketAddr, ClusterStream)> {
        let attempts = resilience.retry.max_connect_attempts.max(1) as usize;
        let outlier = &resilience.outlier;
        let mut last = io::Error::new(io::ErrorKind::NotConnected, "no healthy upstream");
        let mut tried = Vec::new();
        while tried.len() < attempts {
            let Some(endpoint) = set.pick_for(key, &tried, outlier::now_ms()) else {
                break;
            };
            match self.connector.connect(endpoint.addr, timeout).await {
                Ok(s) => {
                    self.record(endpoint, set, outlier, Outcome::Connected);
                    return Ok((endpoint.addr, s));
                }
                Err(e) => {
                    tracing::warn!(upstream = %endpoint.addr, error = %e, "upstream connect failed");
                    self.record(endpoint, set, outlier, Outcome::LocalFailure);
                    last = e;
                }
            }
            tried.push(endpoint.addr);
        }
        Err(last)
    }

    /// Lets a request in unless MeshCircuitBreaker's `maxRequests` are in
    /// flight; it counts as in flight while the guard lives.
    /// With `maxConnections` and `maxPendingRequests` both set, requests
    /// beyond the open connections are the pending ones (HTTP/1.1 carries
    /// one request per connection), so at most their sum is in flight.
    pub fn admit_request(&self, limits: &ConnectionLimits) -> Option<InFlightRequest<'_>> {
        let active = &self.stats.rq_active;
        let pending_cap = match (limits.max_connections, limits.max_pending_requests) {
            (Some(c), Some(p)) => Some(c.saturating_add(p)),
            _ => None,
        };
        if [limits.max_requests, pending_cap]
            .into_iter()
            .flatten()
            .any(|max| active.get() >= i64::from(max))
        {
            return None;
        }
        active.inc();
        Some(InFlightRequest(active))
    }

    /// Records what a try of `endpoint` came to, takes the endpoint out
    /// when a detector trips, and runs the interval detectors when due.
    pub fn record(
        &self,
        endpoint: &Endpoint,
        set: &EndpointSet,
        cfg: &OutlierDetection,
        outcome: Outcome,
    ) {
        let now = outlier::now_ms();
        if let Some(why) = endpoint.health.record(cfg, outcome, now) {
            self.eject(endpoint, set, cfg, why);
        }
        if self.health.evaluation_due(cfg, now) {
            let all: Vec<&Endpoint> = set.endpoints().collect();
            let healths: Vec<&EndpointHealth> = all.iter().map(|e| &*e.health).collect();
            for (i, why) in outlier::evaluate(cfg, &healths) {
                self.eject(all[i], set, cfg, why);
            }
        }
    }

    pub fn eject(
        &self,
        endpoint: &Endpoint,
        set: &EndpointSet,
        cfg: &OutlierDetection,
        why: outlier::Ejection,
    ) {
        let now = outlier::now_ms();
        if let Some(out) = outlier::try_eject(cfg, &endpoint.health, set.healths(), now) {
            self.stats.ejections_enforced.inc();
            self.stats.ejections_by[why as usize].inc();
            tracing::warn!(cluster = %self.stats.name, upstream = %endpoint.addr, reason = ?why, out_for = ?out, "endpoint taken out of rotation (outlier detection)");
        }
    }
}

/// A request counted in its cluster's `rq_active` until dropped.
pub struct InFlightRequest<'a>(&'a koguma_telemetry::metrics::Gauge);

impl Drop for InFlightRequest<'_> {
    fn drop(&mut self) {
        self.0.dec();
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
    pub timeouts: Timeouts,
    /// Retries and outlier detection (outbounds).
    pub resilience: Resilience,
    /// Set on inbounds when mesh mTLS is on.
    pub mesh: Option<InboundMesh>,
    /// Why the target has no endpoints, when the CP said.
    pub unavailable: Option<Arc<str>>,
    /// Outbounds with a MeshHTTPRoute: the rules that send requests
    /// elsewhere than this route's own cluster.
    pub http_routes: Option<Arc<crate::routing::HttpRouteTable>>,
    /// Outbounds with a MeshTCPRoute: the split of connections.
    pub tcp_backends: Option<Arc<crate::routing::WeightedBackends>>,
    /// A listener's faults, rate limits and access log (the listener's
    /// own route only; a route's backends have none).
    pub traffic: crate::traffic::ListenerTraffic,
}

impl Route {
    /// The route a new TCP connection takes: a MeshTCPRoute's pick, else
    /// this one. `None`: the pick could not be resolved.
    pub fn tcp_backend(self: &Arc<Route>) -> Result<Arc<Route>, Arc<str>> {
        match self.tcp_backends.as_ref().and_then(|b| b.pick()) {
            None => Ok(self.clone()),
            Some(crate::routing::Backend::Route(r)) => Ok(r.clone()),
            Some(crate::routing::Backend::Unresolved(why)) => Err(why.clone()),
        }
    }

    /// Connects to an upstream, moving on to another endpoint when one
    /// refuses, so that one dead endpoint does not fail the connection.
    /// `client`: the downstream's address, for a source-IP hash.
    pub async fn connect(&self, client: Option<IpAddr>) -> io::Result<(SocketAddr, ClusterStream)> {
        let set = match &self.target {
            Target::Local(endpoint) => {
                let s = self
                    .cluster
                    .connector
                    .connect(endpoint.addr, self.timeouts.connect)
                    .await?;
                return Ok((endpoint.addr, s));
            }
            Target::Balanced(set) => set,
            Target::BySni(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a zone proxy route connects by SNI",
                ));
            }
        };
        let key = set.key_for(&http::HeaderMap::new(), &http::Uri::default(), client);
        let result = self
            .cluster
            .connect_first(set, &key, &self.resilience, self.timeouts.connect)
            .await;
        let Err(mut last) = result else {
            return result;
        };
        if set.is_empty() {
            self.cluster.stats.no_healthy_upstream.inc();
            if let Some(why) = &self.unavailable {
                last = io::Error::new(io::ErrorKind::NotConnected, why.to_string());
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{Either, Empty};

    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;
    use crate::stats::Stats;

    /// An HTTP/1.1 server on loopback that keeps connections alive.
    async fn server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    service_fn(|_| async {
                        Ok::<_, Infallible>(hyper::Response::new(Empty::<bytes::Bytes>::new()))
                    }),
                ));
            }
        });
        addr
    }

    /// Connections the cluster made for two requests `apart`.
    async fn connections_for_two_requests(idle: Duration, apart: Duration) -> u64 {
        let addr = server().await;
        let timeouts = Timeouts {
            idle,
            ..Timeouts::OUTBOUND
        };
        let cluster = Cluster::new(Stats::default().cluster("c"), &timeouts, None, None);
        for i in 0..2 {
            if i > 0 {
                tokio::time::sleep(apart).await;
            }
            let req = http::Request::get(format!("http://{addr}/"))
                .body(Either::Right(
                    http_body_util::Full::new(bytes::Bytes::new()),
                ))
                .unwrap();
            assert_eq!(cluster.h1.request(req).await.unwrap().status(), 200);
        }
        cluster.stats.cx_total.get()
    }

    #[tokio::test]
    async fn pooled_connections_live_as_long_as_the_routes_idle_timeout() {
        // Kept while within it (Kuma's default is an hour)...
        let kept =
            connections_for_two_requests(Duration::from_secs(10), Duration::from_millis(400));
        assert_eq!(kept.await, 1);
        // ...and closed after it.
        let closed =
            connections_for_two_requests(Duration::from_millis(100), Duration::from_millis(400));
        assert_eq!(closed.await, 2);
    }
}
