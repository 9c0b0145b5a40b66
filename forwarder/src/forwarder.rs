//! The set of running listeners and its reconciliation against new configs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;

use crate::authz::Permissions;
use crate::config::{MeshTlsConfig, MtlsMode, ProxyConfig, Timeouts};
use crate::drain::DrainWatch;
use crate::endpoints::{Endpoint, EndpointSet};
use crate::error::ForwarderError;
use crate::inbound::InboundMesh;
use crate::listener::RunningListener;
use crate::route::{Cluster, Route, SniTarget, Target, Terminate};
use crate::socket;
use crate::stats::Stats;
use crate::tls::{MeshClientTls, MeshTls};
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
}

/// One listener of a config, before it is bound.
struct Planned {
    listen: SocketAddr,
    direction: Direction,
    /// Whether it has a socket of its own (else the transparent listeners
    /// hand it connections).
    bound: bool,
    route: Route,
}

/// A config's listeners and the mTLS client side of its new clusters, all
/// prepared before anything running changes.
struct Plan {
    listeners: Vec<Planned>,
    cluster_tls: Vec<(Arc<Cluster>, MeshClientTls)>,
    clusters: HashMap<String, Arc<Cluster>>,
    identities: Vec<(MeshTlsConfig, Arc<MeshTls>)>,
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
        let mut table = TransparentTable {
            connect_timeout: config.outbound_timeouts.connect,
            outbound_passthrough: config.transparent.is_some_and(|t| t.passthrough),
            // Kuma's strict inbound ports: under Strict mTLS only declared
            // inbounds take traffic.
            inbound_passthrough: config
                .mtls
                .as_ref()
                .is_none_or(|m| m.mode != MtlsMode::Strict),
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
        let mut identities: Vec<(MeshTlsConfig, Arc<MeshTls>)> = Vec::new();
        // This config's identities: one per certificate, the running
        // config's own where it carries the same one.
        let mut identity = |cfg: &MeshTlsConfig| -> Result<Arc<MeshTls>, ForwarderError> {
            if let Some((_, tls)) = identities.iter().find(|(c, _)| c == cfg) {
                return Ok(tls.clone());
            }
            let tls = match inner.identities.iter().find(|(c, _)| c == cfg) {
                Some((_, tls)) => tls.clone(),
                None => Arc::new(MeshTls::new(cfg)?),
            };
            identities.push((cfg.clone(), tls.clone()));
            Ok(tls)
        };
        let mesh_tls = match &config.mtls {
            Some(cfg) => Some(identity(cfg)?),
            None => None,
        };
        let mut planned: Vec<Planned> = Vec::new();
        let mut cluster_tls = Vec::new();
        let mut clusters: HashMap<String, Arc<Cluster>> = HashMap::new();
        // Clusters are kept across configs by name, and under mTLS by CA,
        // own certificate and expected identity: pooled connections made
        // under other settings (or none) are not reused, and after a renewal
        // new requests go out on new connections with the new certificate
        // while requests in flight finish on theirs.
        let mut cluster = |name: &str,
                           timeouts: &Timeouts,
                           tls_key: Option<String>,
                           source: Option<IpAddr>,
                           sni: Option<ServerName<'static>>|
         -> Arc<Cluster> {
            let key = match (tls_key, source) {
                (Some(k), _) => format!("{name}|{k}|{sni:?}"),
                (None, Some(ip)) => format!("{name}|from {ip}"),
                (None, None) => name.to_string(),
            };
            let c = inner
                .clusters
                .get(&key)
                .or_else(|| clusters.get(&key))
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(Cluster::new(
                        self.stats.cluster(name),
                        timeouts,
                        source,
                        sni,
                    ))
                });
            clusters.insert(key, c.clone());
            c
        };
        let transparent = config.transparent.is_some();
        for inb in &config.inbounds {
            let cluster_name = format!("localhost:{}", inb.upstream.port());
            let source = if transparent {
                socket::passthrough_source(inb.upstream.ip())
            } else {
                None
            };
            planned.push(Planned {
                listen: inb.listen,
                direction: Direction::Inbound,
                bound: !transparent,
                route: Route {
                    unavailable: None,
                    name: inb.name.clone(),
                    protocol: inb.protocol,
                    target: Target::Local(Endpoint::new(inb.upstream, Default::default())),
                    listener_stats: self.stats.listener(&inb.listen.to_string(), &cluster_name),
                    cluster: cluster(&cluster_name, &config.inbound_timeouts, None, source, None),
                    timeouts: config.inbound_timeouts,
                    resilience: config.resilience.clone(),
                    mesh: mesh_tls.as_ref().map(|tls| InboundMesh {
                        tls: tls.clone(),
                        permissions: Permissions::new(inb.permissions.clone()),
                    }),
                },
            });
        }
        for out in &config.outbounds {
            let tls = match (&mesh_tls, &out.identity) {
                (Some(tls), Some(identity)) => Some((tls, identity)),
                _ => None,
            };
            let sni = match (&tls, &out.sni) {
                (Some(_), Some(sni)) => {
                    Some(
                        ServerName::try_from(sni.clone()).map_err(|_| ForwarderError::BadSni {
                            listener: out.name.clone(),
                            sni: sni.clone(),
                        })?,
                    )
                }
                _ => None,
            };
            let c = cluster(
                &out.service,
                &out.timeouts,
                tls.map(|(t, id)| format!("{:x}|{id}", t.fingerprint)),
                None,
                sni,
            );
            c.set_limits(&out.resilience.limits);
            c.health_checks(out.health_check.as_ref(), &out.endpoints);
            // A cluster with the same key already has this TLS side (and
            // its session cache); only a new one needs it built.
            if let Some((t, id)) = tls
                && c.tls.load().is_none()
                && !cluster_tls.iter().any(|(k, _)| Arc::ptr_eq(k, &c))
            {
                cluster_tls.push((c.clone(), t.client_for(id)?));
            }
            c.stats.membership_total.set(out.endpoints.len() as i64);
            c.retain_pinned(|addr| out.endpoints.iter().any(|e| e.addr == addr));
            if out.transparent && !transparent {
                return Err(ForwarderError::NotTransparent {
                    listener: out.name.clone(),
                });
            }
            planned.push(Planned {
                listen: out.listen,
                direction: Direction::Outbound,
                bound: !out.transparent,
                route: Route {
                    unavailable: out.unavailable.as_deref().map(Arc::from),
                    name: out.name.clone(),
                    protocol: out.protocol,
                    target: Target::Balanced(EndpointSet::new(
                        &out.endpoints,
                        &c.health,
                        &out.load_balancer,
                        out.resilience.outlier.panic_threshold,
                    )),
                    listener_stats: self.stats.listener(&out.listen.to_string(), &out.service),
                    cluster: c,
                    timeouts: out.timeouts,
                    resilience: out.resilience.clone(),
                    mesh: None,
                },
            });
        }
        if let Some(zp) = &config.zone_proxy {
            let mut by_mesh = HashMap::new();
            for (mesh, cfg) in &zp.mesh_tls {
                by_mesh.insert(mesh.as_str(), identity(cfg)?);
            }
            let mut table = HashMap::new();
            for r in &zp.routes {
                let c = cluster(&r.cluster, &config.outbound_timeouts, None, None, None);
                c.stats.membership_total.set(r.endpoints.len() as i64);
                let terminate = match &r.terminate {
                    None => None,
                    Some(t) => {
                        let tls = by_mesh.get(t.mesh.as_str()).cloned().ok_or_else(|| {
                            ForwarderError::NoMeshIdentity {
                                route: r.sni.clone(),
                                mesh: t.mesh.clone(),
                            }
                        })?;
                        let upstream_tls = match &t.tls {
                            Some(u) => Some(crate::tls::upstream::client(u, &t.host)?),
                            None => None,
                        };
                        Some(Terminate {
                            tls,
                            permissions: Permissions::new(t.permissions.clone()),
                            host: t.host.clone(),
                            port: t.port,
                            upstream_tls,
                        })
                    }
                };
                let target = SniTarget {
                    endpoints: EndpointSet::new(
                        &r.endpoints,
                        &c.health,
                        &crate::config::LoadBalancer::RoundRobin,
                        None,
                    ),
                    cluster: c,
                    terminate,
                };
                table.insert(r.sni.clone(), target);
            }
            let name = format!("zone-proxy:{}", zp.listen);
            planned.push(Planned {
                listen: zp.listen,
                direction: Direction::Inbound,
                bound: true,
                route: Route {
                    unavailable: None,
                    protocol: crate::config::Protocol::Tcp,
                    target: Target::BySni(table),
                    listener_stats: self.stats.listener(&zp.listen.to_string(), "zone-proxy"),
                    cluster: cluster(&name, &config.outbound_timeouts, None, None, None),
                    timeouts: config.outbound_timeouts,
                    resilience: config.resilience.clone(),
                    mesh: None,
                    name,
                },
            });
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
        Ok(Plan {
            listeners: planned,
            cluster_tls,
            clusters,
            identities,
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
