//! The set of running listeners and its reconciliation against new configs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::access_log::ListenerLog;
use crate::config::{MeshTlsConfig, MtlsMode, ProxyConfig};
use crate::drain::DrainWatch;
use crate::error::ForwarderError;
use crate::listener::RunningListener;
use crate::plan::{Planned, Planner};
use crate::route::Cluster;
use crate::socket;
use crate::stats::Stats;
use crate::tls::{MeshClientTls, MeshTls};
use crate::traffic::TrafficState;
use crate::transparent::{Direction, RedirectListeners, SELF_PROBE, TransparentTable};

pub struct Forwarder {
    stats: Arc<Stats>,
    inner: Mutex<Inner>,
    /// Read by the transparent listeners on every connection.
    table: Arc<ArcSwap<TransparentTable>>,
    /// Whether the self-probe found our own traffic redirected to us.
    own_traffic: Arc<AtomicBool>,
}

struct Inner {
    listeners: HashMap<SocketAddr, RunningListener>,
    clusters: HashMap<String, Arc<Cluster>>,
    /// The listeners iptables redirects to, when transparent proxying is on.
    redirect: RedirectListeners,
    /// `None` once the process drains: no more configs are taken.
    process: Option<DrainWatch>,
    /// The mesh identities of the running config, kept while a new config
    /// carries the same certificate: rebuilding them would drop the
    /// session caches that let peers resume instead of a full handshake.
    identities: Vec<(MeshTlsConfig, Arc<MeshTls>)>,
    /// Access log sinks and rate limit buckets in force.
    traffic: TrafficState,
}

/// A config's listeners and the mTLS client side of its new clusters, all
/// prepared before anything running changes.
struct Plan {
    listeners: Vec<Planned>,
    cluster_tls: Vec<(Arc<Cluster>, MeshClientTls)>,
    clusters: HashMap<String, Arc<Cluster>>,
    identities: Vec<(MeshTlsConfig, Arc<MeshTls>)>,
    traffic: TrafficState,
    passthrough_log: Option<Arc<ListenerLog>>,
}

impl Forwarder {
    pub fn new(stats: Arc<Stats>, process: DrainWatch) -> Forwarder {
        Forwarder {
            stats,
            inner: Mutex::new(Inner {
                listeners: HashMap::new(),
                clusters: HashMap::new(),
                redirect: RedirectListeners::default(),
                process: Some(process),
                identities: Vec::new(),
                traffic: TrafficState::default(),
            }),
            table: Arc::new(ArcSwap::from_pointee(TransparentTable::default())),
            own_traffic: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing in `apply` can leave `Inner` half-changed on a panic before
        // it commits, so a poisoned lock still guards consistent state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the running listeners match `config`, or changes nothing and
    /// says why. Must be called inside a tokio runtime.
    pub fn apply(&self, config: &ProxyConfig) -> Result<(), ForwarderError> {
        let mut inner = self.lock();
        let Some(process) = inner.process.clone() else {
            return Err(ForwarderError::Draining);
        };
        let Plan {
            listeners: planned,
            cluster_tls,
            clusters,
            identities,
            traffic,
            passthrough_log,
        } = self.plan(&inner, config)?;

        // Bind every new socket first: if one fails, the new ones are
        // dropped and the running config is untouched.
        let mut sockets = HashMap::new();
        for p in planned.iter().filter(|p| p.bound) {
            if inner.listeners.get(&p.listen).is_none_or(|l| !l.bound) {
                let socket =
                    socket::bind_listener(p.listen).map_err(|source| ForwarderError::Bind {
                        listener: p.route.name.clone(),
                        addr: p.listen,
                        source,
                    })?;
                sockets.insert(p.listen, socket);
            }
        }
        let redirect_sockets = inner.redirect.bind_missing(config.transparent.as_ref())?;

        let keep: HashMap<SocketAddr, bool> = planned.iter().map(|p| (p.listen, p.bound)).collect();
        let removed: Vec<SocketAddr> = inner
            .listeners
            .iter()
            .filter(|(a, l)| keep.get(a) != Some(&l.bound))
            .map(|(a, _)| *a)
            .collect();
        for addr in removed {
            if let Some(l) = inner.listeners.remove(&addr) {
                tracing::info!(%addr, "listener removed from config: draining");
                l.stop();
            }
        }
        // New clusters (renewed certificates among them) get their TLS
        // side before routes point at them.
        for (cluster, tls) in cluster_tls {
            cluster.tls.store(Some(Arc::new(tls)));
        }
        inner.clusters = clusters;
        inner.identities = identities;
        inner.traffic = traffic;
        let mut table = TransparentTable {
            connect_timeout: config.outbound_timeouts.connect,
            outbound_passthrough: config.transparent.is_some_and(|t| t.passthrough),
            // Kuma's strict inbound ports: under Strict mTLS only declared
            // inbounds take traffic.
            inbound_passthrough: config
                .mtls
                .as_ref()
                .is_none_or(|m| m.mode != MtlsMode::Strict),
            passthrough_log,
            ..TransparentTable::default()
        };
        for p in planned {
            let route = Arc::new(p.route);
            match (inner.listeners.get(&p.listen), sockets.remove(&p.listen)) {
                (Some(running), _) => running.shared.set_route(route),
                (None, Some(socket)) => {
                    tracing::info!(addr = %p.listen, listener = %route.name, protocol = route.protocol.as_str(), "listening");
                    let running = RunningListener::spawn(socket, route, process.clone());
                    inner.listeners.insert(p.listen, running);
                }
                (None, None) => {
                    tracing::info!(addr = %p.listen, listener = %route.name, protocol = route.protocol.as_str(), "reachable through the transparent proxy");
                    inner
                        .listeners
                        .insert(p.listen, RunningListener::unbound(route));
                }
            }
            if let Some(l) = inner.listeners.get(&p.listen).filter(|l| !l.bound) {
                match p.direction {
                    Direction::Outbound => table.outbound.insert(p.listen, l.shared.clone()),
                    Direction::Inbound => table.inbound.insert(p.listen.port(), l.shared.clone()),
                };
            }
        }
        self.table.store(Arc::new(table));
        inner.redirect.commit(
            redirect_sockets,
            &self.table,
            &self.stats,
            &self.own_traffic,
            &process,
        );
        Ok(())
    }

    fn plan(&self, inner: &Inner, config: &ProxyConfig) -> Result<Plan, ForwarderError> {
        let mut planner = Planner::new(
            &self.stats,
            &inner.clusters,
            &inner.identities,
            &inner.traffic,
        );
        let mesh_tls = match &config.mtls {
            Some(cfg) => Some(planner.identity(cfg)?),
            None => None,
        };
        let mut planned: Vec<Planned> = Vec::new();
        for inb in &config.inbounds {
            planned.push(planner.inbound(inb, config, mesh_tls.as_ref()));
        }
        for out in &config.outbounds {
            planned.push(planner.outbound(out, config, mesh_tls.as_ref())?);
        }
        if let Some(zp) = &config.zone_proxy {
            planned.push(planner.zone_proxy(zp, config)?);
        }
        for (i, p) in planned.iter().enumerate() {
            if let Some(first) = planned[..i].iter().find(|q| q.listen == p.listen) {
                return Err(ForwarderError::DuplicateListener {
                    addr: p.listen,
                    first: first.route.name.clone(),
                    second: p.route.name.clone(),
                });
            }
        }
        let passthrough_log = planner.traffic.log(
            &inner.traffic,
            "pass_through",
            &config.passthrough_access_logs,
            &self.stats,
        );
        Ok(Plan {
            listeners: planned,
            cluster_tls: planner.cluster_tls,
            clusters: planner.clusters,
            identities: planner.identities,
            traffic: planner.traffic,
            passthrough_log,
        })
    }

    /// Under transparent proxying, whether the rules redirect this
    /// process's own connections back to it (it runs as the wrong UID):
    /// one connection to [`SELF_PROBE`] tells. Passthrough is refused once
    /// it is known, so that connections cannot loop.
    pub async fn own_traffic_redirected(&self) -> bool {
        let connected = tokio::time::timeout(
            Duration::from_millis(500),
            socket::connect(SELF_PROBE, None),
        )
        .await;
        if matches!(connected, Ok(Ok(_))) {
            // Connected: to ourselves, surely; the accept loop says so soon.
            for _ in 0..50 {
                if self.own_traffic.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.own_traffic.load(Ordering::Relaxed)
    }

    /// Stops every listener and refuses further configs; connections finish
    /// on their own (the caller's drain trigger waits for them).
    pub fn begin_drain(&self) {
        let mut inner = self.lock();
        inner.process = None;
        for (_, l) in inner.listeners.drain() {
            l.stop();
        }
        inner.redirect.stop_all();
    }
}
