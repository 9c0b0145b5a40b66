//! A config turned into routes and clusters before anything running
//! changes: identities and clusters are reused from the running config
//! where they are the same (keeping pooled connections and TLS session
//! caches), and every route an outbound's MeshHTTPRoute or MeshTCPRoute
//! names is built beside its own.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::ServerName;

use crate::authz::Permissions;
use crate::config::{
    BackendConfig, ClusterConfig, FilterConfig, InboundConfig, LoadBalancer, MeshTlsConfig,
    OutboundConfig, Protocol, ProxyConfig, Timeouts, ZoneProxyConfig,
};
use crate::endpoints::{Endpoint, EndpointSet};
use crate::error::ForwarderError;
use crate::inbound::InboundMesh;
use crate::route::{Cluster, Route, SniTarget, Target, Terminate};
use crate::routing::{
    Backend as RouteBackend, Filter as RouteFilter, HttpRouteTable, RouteRule, WeightedBackends,
};
use crate::socket;
use crate::stats::{ListenerStats, Stats};
use crate::tls::{MeshClientTls, MeshTls};
use crate::traffic::{ListenerTraffic, TrafficState};
use crate::transparent::Direction;

/// One listener of a config, before it is bound.
pub struct Planned {
    pub listen: SocketAddr,
    pub direction: Direction,
    /// Whether it has a socket of its own (else the transparent listeners
    /// hand it connections).
    pub bound: bool,
    pub route: Route,
}

/// What a config is being turned into.
pub struct Planner<'a> {
    stats: &'a Arc<Stats>,
    running_clusters: &'a HashMap<String, Arc<Cluster>>,
    running_identities: &'a [(MeshTlsConfig, Arc<MeshTls>)],
    /// This config's identities: one per certificate.
    pub identities: Vec<(MeshTlsConfig, Arc<MeshTls>)>,
    pub clusters: HashMap<String, Arc<Cluster>>,
    /// The mTLS client side of the clusters that are new.
    pub cluster_tls: Vec<(Arc<Cluster>, MeshClientTls)>,
    running_traffic: &'a TrafficState,
    /// This config's access log sinks and rate limit buckets.
    pub traffic: TrafficState,
}

impl<'a> Planner<'a> {
    pub fn new(
        stats: &'a Arc<Stats>,
        running_clusters: &'a HashMap<String, Arc<Cluster>>,
        running_identities: &'a [(MeshTlsConfig, Arc<MeshTls>)],
        running_traffic: &'a TrafficState,
    ) -> Planner<'a> {
        Planner {
            stats,
            running_clusters,
            running_identities,
            identities: Vec::new(),
            clusters: HashMap::new(),
            cluster_tls: Vec::new(),
            running_traffic,
            traffic: TrafficState::default(),
        }
    }

    /// The identity of `cfg`: this config's, the running config's where it
    /// carries the same certificate, else a new one.
    pub fn identity(&mut self, cfg: &MeshTlsConfig) -> Result<Arc<MeshTls>, ForwarderError> {
        if let Some((_, tls)) = self.identities.iter().find(|(c, _)| c == cfg) {
            return Ok(tls.clone());
        }
        let tls = match self.running_identities.iter().find(|(c, _)| c == cfg) {
            Some((_, tls)) => tls.clone(),
            None => Arc::new(MeshTls::new(cfg)?),
        };
        self.identities.push((cfg.clone(), tls.clone()));
        Ok(tls)
    }

    /// Clusters are kept across configs by name, connect and idle timeouts,
    /// and under mTLS by CA, own certificate and expected identity: pooled
    /// connections made under other settings (or none) are not reused, and after a renewal new
    /// requests go out on new connections with the new certificate while
    /// requests in flight finish on theirs.
    fn cluster(
        &mut self,
        name: &str,
        stats_name: &str,
        timeouts: &Timeouts,
        tls_key: Option<String>,
        source: Option<IpAddr>,
        sni: Option<ServerName<'static>>,
    ) -> Arc<Cluster> {
        let key = match (tls_key, source) {
            (Some(k), _) => format!("{name}|{k}|{sni:?}"),
            (None, Some(ip)) => format!("{name}|from {ip}"),
            (None, None) => name.to_string(),
        };
        // Its connections are made and pooled under these timeouts: a
        // MeshTimeout that changes them gets a cluster of its own.
        let key = format!("{key}|{:?}|{:?}", timeouts.connect, timeouts.idle);
        let c = self
            .running_clusters
            .get(&key)
            .or_else(|| self.clusters.get(&key))
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(Cluster::new(
                    self.stats.cluster(stats_name),
                    timeouts,
                    source,
                    sni,
                ))
            });
        self.clusters.insert(key, c.clone());
        c
    }

    pub fn inbound(
        &mut self,
        inb: &InboundConfig,
        config: &ProxyConfig,
        mesh_tls: Option<&Arc<MeshTls>>,
    ) -> Planned {
        let transparent = config.transparent.is_some();
        let cluster_name = format!("localhost:{}", inb.upstream.port());
        let source = if transparent {
            socket::passthrough_source(inb.upstream.ip())
        } else {
            None
        };
        let cluster = self.cluster(
            &cluster_name,
            &cluster_name,
            &inb.timeouts,
            None,
            source,
            None,
        );
        cluster.set_limits(&inb.limits);
        let mut resilience = config.resilience.clone();
        resilience.limits = inb.limits;
        Planned {
            listen: inb.listen,
            direction: Direction::Inbound,
            bound: !transparent,
            route: Route {
                unavailable: None,
                name: inb.name.clone(),
                protocol: inb.protocol,
                target: Target::Local(Endpoint::new(inb.upstream, Default::default())),
                listener_stats: self.stats.listener(&inb.listen.to_string(), &cluster_name),
                cluster,
                timeouts: inb.timeouts,
                resilience,
                mesh: mesh_tls.map(|tls| InboundMesh {
                    tls: tls.clone(),
                    permissions: Permissions::new(inb.permissions.clone()),
                }),
                http_routes: None,
                tcp_backends: None,
                traffic: self.traffic.listener(
                    self.running_traffic,
                    &inb.name,
                    &cluster_name,
                    &inb.traffic,
                    self.stats,
                ),
            },
        }
    }

    /// An outbound's route: its own cluster, and the routes its rules name.
    pub fn outbound(
        &mut self,
        out: &OutboundConfig,
        config: &ProxyConfig,
        mesh_tls: Option<&Arc<MeshTls>>,
    ) -> Result<Planned, ForwarderError> {
        if out.transparent && config.transparent.is_none() {
            return Err(ForwarderError::NotTransparent {
                listener: out.name.clone(),
            });
        }
        let stats = self.stats.listener(&out.listen.to_string(), &out.service);
        let mut route = self.backend(out, &out.cluster, mesh_tls, &stats)?;
        route.traffic = self.traffic.listener(
            self.running_traffic,
            &out.name,
            &out.service,
            &out.traffic,
            self.stats,
        );
        if !out.tcp_backends.is_empty() {
            let split = self.weighted(out, &out.tcp_backends, mesh_tls, &stats)?;
            route.tcp_backends = Some(Arc::new(split));
        }
        if !out.http_routes.is_empty() {
            let mut rules = Vec::with_capacity(out.http_routes.len());
            for r in &out.http_routes {
                let mut filters = Vec::with_capacity(r.filters.len());
                for f in &r.filters {
                    filters.push(match f {
                        FilterConfig::RequestHeaders(m) => RouteFilter::RequestHeaders(m.clone()),
                        FilterConfig::ResponseHeaders(m) => RouteFilter::ResponseHeaders(m.clone()),
                        FilterConfig::Redirect(r) => RouteFilter::Redirect(r.clone()),
                        FilterConfig::Rewrite(r) => RouteFilter::Rewrite(r.clone()),
                        FilterConfig::Mirror {
                            cluster,
                            percentage,
                        } => RouteFilter::Mirror {
                            route: Arc::new(self.backend(out, cluster, mesh_tls, &stats)?),
                            percentage: *percentage,
                        },
                    });
                }
                rules.push(RouteRule {
                    matcher: r.matcher.clone(),
                    filters,
                    backends: self.weighted(out, &r.backends, mesh_tls, &stats)?,
                });
            }
            route.http_routes = Some(Arc::new(HttpRouteTable { rules }));
        }
        Ok(Planned {
            listen: out.listen,
            direction: Direction::Outbound,
            bound: !out.transparent,
            route,
        })
    }

    fn weighted(
        &mut self,
        out: &OutboundConfig,
        list: &[BackendConfig],
        mesh_tls: Option<&Arc<MeshTls>>,
        stats: &Arc<ListenerStats>,
    ) -> Result<WeightedBackends, ForwarderError> {
        let mut backends = Vec::with_capacity(list.len());
        for b in list {
            let to = match b {
                BackendConfig::Cluster { cluster, .. } => {
                    RouteBackend::Route(Arc::new(self.backend(out, cluster, mesh_tls, stats)?))
                }
                BackendConfig::Unresolved { why, .. } => {
                    RouteBackend::Unresolved(Arc::from(why.as_str()))
                }
            };
            backends.push((b.weight(), to));
        }
        Ok(WeightedBackends::new(backends))
    }

    /// The route of `out`'s traffic to one cluster: its own, or a route's
    /// backend.
    fn backend(
        &mut self,
        out: &OutboundConfig,
        cfg: &ClusterConfig,
        mesh_tls: Option<&Arc<MeshTls>>,
        listener_stats: &Arc<ListenerStats>,
    ) -> Result<Route, ForwarderError> {
        let tls = match (mesh_tls, &cfg.identity) {
            (Some(tls), Some(identity)) => Some((tls, identity)),
            _ => None,
        };
        let sni = match (&tls, &cfg.sni) {
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
        let c = self.cluster(
            &cfg.name,
            &cfg.stats_name,
            &cfg.timeouts,
            tls.map(|(t, id)| format!("{:x}|{id}", t.fingerprint)),
            None,
            sni,
        );
        // A cluster with the same key already has this TLS side (and its
        // session cache); only a new one needs it built.
        if let Some((t, id)) = tls
            && c.tls.load().is_none()
            && !self.cluster_tls.iter().any(|(k, _)| Arc::ptr_eq(k, &c))
        {
            self.cluster_tls.push((c.clone(), t.client_for(id)?));
        }
        c.set_limits(&cfg.resilience.limits);
        c.health_checks(cfg.health_check.as_ref(), &cfg.endpoints);
        // Subset clusters count under their service: the service's own
        // cluster says how many endpoints it has.
        if cfg.name == cfg.stats_name {
            c.stats.membership_total.set(cfg.endpoints.len() as i64);
        }
        c.retain_pinned(|addr| cfg.endpoints.iter().any(|e| e.addr == addr));
        Ok(Route {
            unavailable: cfg.unavailable.as_deref().map(Arc::from),
            name: out.name.clone(),
            protocol: out.protocol,
            target: Target::Balanced(EndpointSet::new(
                &cfg.endpoints,
                &c.health,
                &cfg.load_balancer,
                cfg.resilience.outlier.panic_threshold,
            )),
            listener_stats: listener_stats.clone(),
            cluster: c,
            timeouts: cfg.timeouts,
            resilience: cfg.resilience.clone(),
            mesh: None,
            http_routes: None,
            tcp_backends: None,
            traffic: ListenerTraffic::default(),
        })
    }

    /// A zone ingress or egress: one listener that routes by server name.
    pub fn zone_proxy(
        &mut self,
        zp: &ZoneProxyConfig,
        config: &ProxyConfig,
    ) -> Result<Planned, ForwarderError> {
        let mut by_mesh = HashMap::new();
        for (mesh, cfg) in &zp.mesh_tls {
            by_mesh.insert(mesh.as_str(), self.identity(cfg)?);
        }
        let mut table = HashMap::new();
        for r in &zp.routes {
            let c = self.cluster(
                &r.cluster,
                &r.cluster,
                &config.outbound_timeouts,
                None,
                None,
                None,
            );
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
                    &LoadBalancer::RoundRobin,
                    None,
                ),
                cluster: c,
                terminate,
            };
            table.insert(r.sni.clone(), target);
        }
        let name = format!("zone-proxy:{}", zp.listen);
        let cluster = self.cluster(&name, &name, &config.outbound_timeouts, None, None, None);
        Ok(Planned {
            listen: zp.listen,
            direction: Direction::Inbound,
            bound: true,
            route: Route {
                unavailable: None,
                protocol: Protocol::Tcp,
                target: Target::BySni(table),
                listener_stats: self.stats.listener(&zp.listen.to_string(), "zone-proxy"),
                cluster,
                timeouts: config.outbound_timeouts,
                resilience: config.resilience.clone(),
                mesh: None,
                http_routes: None,
                tcp_backends: None,
                traffic: ListenerTraffic::default(),
                name,
            },
        })
    }
}
