//! The two listeners iptables redirects to under transparent proxying.
//! Each accepted connection is handed, by the destination it had before
//! the redirect, to the listener of the config that serves it: a service
//! VIP:port on the outbound side, an inbound's port on the inbound side.
//! Anything else passes through to where it was going (outbound: unless
//! the mesh turned passthrough off; inbound: unless mesh mTLS is Strict,
//! whose undeclared ports are refused).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::access_log::{ConnectionOutcome, Downstream, ListenerLog, LogRecord};
use crate::authz::Peer;
use crate::config::TransparentConfig;
use crate::connector::CountedStream;
use crate::copy;
use crate::drain::{self, DrainTrigger, DrainWatch};
use crate::error::ForwarderError;
use crate::listener::{ListenerShared, accept_until, spawn_connection};
use crate::socket;
use crate::stats::{ClusterStats, ListenerStats, Stats};

/// Where the agent sends one connection to learn whether the rules capture
/// its own traffic (it must run as the UID they exclude): TEST-NET-1
/// (RFC 5737), which no real destination uses. If it arrives at our own
/// redirect listener, every upstream connection would loop back to us.
pub const SELF_PROBE: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 9));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Where redirected connections go, as one snapshot per config.
#[derive(Default)]
pub struct TransparentTable {
    pub outbound: HashMap<SocketAddr, Arc<ListenerShared>>,
    /// By port: the inbound answers on whichever local address the caller used.
    pub inbound: HashMap<u16, Arc<ListenerShared>>,
    pub outbound_passthrough: bool,
    pub inbound_passthrough: bool,
    pub connect_timeout: Duration,
    /// MeshAccessLog on outbound passthrough connections.
    pub passthrough_log: Option<Arc<ListenerLog>>,
}

/// Kuma's names for the catch-all clusters, per address family.
struct PassthroughStats {
    v4: Arc<ClusterStats>,
    v6: Arc<ClusterStats>,
}

impl PassthroughStats {
    fn new(stats: &Stats, direction: Direction) -> PassthroughStats {
        let d = direction.as_str();
        PassthroughStats {
            v4: stats.cluster(&format!("{d}:passthrough:ipv4")),
            v6: stats.cluster(&format!("{d}:passthrough:ipv6")),
        }
    }

    fn for_dst(&self, dst: SocketAddr) -> Arc<ClusterStats> {
        if dst.is_ipv4() {
            self.v4.clone()
        } else {
            self.v6.clone()
        }
    }
}

/// The redirect listeners in force, by direction and address: a config
/// that keeps an address keeps its socket (rebinding it would race the old
/// one), so only added addresses are bound and only dropped ones stop.
#[derive(Default)]
pub struct RedirectListeners {
    running: HashMap<(Direction, SocketAddr), TransparentListener>,
}

/// Sockets bound for a config, not yet serving.
pub struct RedirectSockets {
    wanted: HashSet<(Direction, SocketAddr)>,
    new: Vec<(Direction, TcpListener)>,
}

fn redirect_addrs(tp: &TransparentConfig) -> Vec<(Direction, SocketAddr)> {
    let mut addrs = Vec::new();
    for (direction, port) in [
        (Direction::Outbound, tp.outbound_port),
        (Direction::Inbound, tp.inbound_port),
    ] {
        addrs.push((direction, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))));
        if tp.ipv6 {
            addrs.push((direction, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))));
        }
    }
    addrs
}

impl RedirectListeners {
    /// Binds what `tp` adds; an error changes nothing. A host without IPv6
    /// gets IPv4 listeners only.
    pub fn bind_missing(
        &self,
        tp: Option<&TransparentConfig>,
    ) -> Result<RedirectSockets, ForwarderError> {
        let mut sockets = RedirectSockets {
            wanted: HashSet::new(),
            new: Vec::new(),
        };
        for (direction, addr) in tp.map(redirect_addrs).unwrap_or_default() {
            if self.running.contains_key(&(direction, addr)) {
                sockets.wanted.insert((direction, addr));
                continue;
            }
            match socket::bind_listener(addr) {
                Ok(s) => {
                    sockets.wanted.insert((direction, addr));
                    sockets.new.push((direction, s));
                }
                Err(e) if socket::is_family_unavailable(addr, &e) => {
                    tracing::info!(%addr, error = %e, "no IPv6 on this host: transparent proxying on IPv4 only");
                }
                Err(source) => {
                    return Err(ForwarderError::Bind {
                        listener: format!("{}:passthrough", direction.as_str()),
                        addr,
                        source,
                    });
                }
            }
        }
        Ok(sockets)
    }

    pub fn commit(
        &mut self,
        sockets: RedirectSockets,
        table: &Arc<ArcSwap<TransparentTable>>,
        stats: &Stats,
        own_traffic: &Arc<AtomicBool>,
        process: &DrainWatch,
    ) {
        let gone: Vec<_> = self
            .running
            .keys()
            .filter(|k| !sockets.wanted.contains(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(l) = self.running.remove(&key) {
                tracing::info!(addr = %key.1, "transparent proxy listener removed from config");
                l.stop();
            }
        }
        for (direction, socket) in sockets.new {
            let Ok(addr) = socket.local_addr() else {
                continue;
            };
            tracing::info!(%addr, direction = direction.as_str(), "transparent proxy listening");
            let l = TransparentListener::spawn(
                socket,
                direction,
                table.clone(),
                stats,
                own_traffic.clone(),
                process.clone(),
            );
            self.running.insert((direction, addr), l);
        }
    }

    pub fn stop_all(&mut self) {
        for (_, l) in self.running.drain() {
            l.stop();
        }
    }
}

pub struct TransparentListener {
    stop: DrainTrigger,
}

impl TransparentListener {
    pub fn spawn(
        socket: TcpListener,
        direction: Direction,
        table: Arc<ArcSwap<TransparentTable>>,
        stats: &Stats,
        own_traffic: Arc<AtomicBool>,
        process: DrainWatch,
    ) -> TransparentListener {
        let (stop, stopped) = drain::channel();
        let local = socket.local_addr().ok();
        let accept = AcceptLoop {
            socket,
            direction,
            table,
            listener_stats: stats.listener(
                &local.map(|a| a.to_string()).unwrap_or_default(),
                &format!("{}:passthrough", direction.as_str()),
            ),
            passthrough: PassthroughStats::new(stats, direction),
            own_traffic,
        };
        let span =
            tracing::info_span!("transparent", direction = direction.as_str(), addr = ?local);
        tokio::spawn(accept.run(stopped, process).instrument(span));
        TransparentListener { stop }
    }

    pub fn stop(self) {
        self.stop.signal();
    }
}

struct AcceptLoop {
    socket: TcpListener,
    direction: Direction,
    table: Arc<ArcSwap<TransparentTable>>,
    listener_stats: Arc<ListenerStats>,
    passthrough: PassthroughStats,
    /// Set when the probe came back: our own connections are redirected.
    own_traffic: Arc<AtomicBool>,
}

impl AcceptLoop {
    async fn run(self, stopped: DrainWatch, process: DrainWatch) {
        accept_until(&self.socket, &stopped, &process, |stream, peer| {
            self.dispatch(stream, peer, &process)
        })
        .await;
        tracing::info!("transparent listener stopped accepting");
    }

    fn dispatch(&self, stream: TcpStream, peer: SocketAddr, process: &DrainWatch) {
        self.listener_stats.cx_total.inc();
        let local = match stream.local_addr() {
            Ok(l) => l,
            Err(e) => {
                tracing::info!(%peer, error = %e, "refused: the connection has no local address");
                return;
            }
        };
        let dst = match socket::original_dst(&stream, local) {
            Ok(dst) => dst,
            Err(e) => {
                tracing::info!(%peer, error = %e, "refused: the connection has no original destination (was it redirected by iptables?)");
                return;
            }
        };
        // Not redirected: someone dialled the redirect port itself, and
        // passing it through would connect us to ourselves.
        if local == dst {
            tracing::info!(%peer, %dst, "refused: a direct connection to the redirect port");
            return;
        }
        if dst == SELF_PROBE {
            self.own_traffic.store(true, Ordering::Relaxed);
            tracing::error!(
                "this process's own connections are redirected to it by iptables: run koguma-dp as the UID the rules exclude (--kuma-dp-user, 5678 by default); passthrough is refused until then, so that connections cannot loop"
            );
            return;
        }
        let table = self.table.load();
        let (target, passthrough) = match self.direction {
            Direction::Outbound => (table.outbound.get(&dst), table.outbound_passthrough),
            Direction::Inbound => (table.inbound.get(&dst.port()), table.inbound_passthrough),
        };
        if let Some(shared) = target {
            spawn_connection(stream, peer, shared.clone(), process);
            return;
        }
        if self.own_traffic.load(Ordering::Relaxed) {
            tracing::info!(%peer, %dst, "refused: this process's own traffic is redirected (see the error above)");
            return;
        }
        if !passthrough {
            let why = match self.direction {
                Direction::Outbound => "passthrough is off in this mesh",
                Direction::Inbound => "mesh mTLS is Strict and no inbound declares this port",
            };
            tracing::info!(%peer, %dst, "refused: {why}");
            return;
        }
        let source = match self.direction {
            Direction::Outbound => None,
            Direction::Inbound => socket::passthrough_source(dst.ip()),
        };
        let stats = self.passthrough.for_dst(dst);
        let timeout = table.connect_timeout;
        let log = match self.direction {
            Direction::Outbound => table.passthrough_log.clone(),
            Direction::Inbound => None,
        };
        let downstream = Downstream::new(Some(peer), Some(local));
        let process = process.clone();
        let span =
            tracing::debug_span!("passthrough", direction = self.direction.as_str(), %peer, %dst);
        tokio::spawn(
            async move {
                let _held = process;
                let started = (SystemTime::now(), Instant::now());
                let outcome = pass_through(stream, dst, source, stats, timeout).await;
                if let Some(log) = log {
                    let peer = &Peer::Unauthenticated;
                    let mut record = LogRecord::closed(downstream, peer, started, outcome);
                    // The original destination, reached or not.
                    record.upstream = Some(dst);
                    log.emit(record);
                }
            }
            .instrument(span),
        );
    }
}

/// L4 to the original destination: the proxy's own connections are not
/// redirected again (its UID, or the passthrough source, is excluded).
async fn pass_through(
    mut downstream: TcpStream,
    dst: SocketAddr,
    source: Option<std::net::IpAddr>,
    stats: Arc<ClusterStats>,
    timeout: Duration,
) -> ConnectionOutcome {
    let mut upstream = match CountedStream::connect(dst, source, stats, timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(error = %e, "passthrough: cannot reach the original destination");
            return Err(("UF", e.to_string()));
        }
    };
    // Envoy's tcp_proxy idle timeout, which Kuma leaves at its default.
    let idle = Some(crate::config::Timeouts::OUTBOUND.idle);
    match copy::bidirectional(&mut downstream, &mut upstream, idle).await {
        Ok((tx, rx)) => {
            tracing::debug!(tx, rx, "passthrough connection closed");
            Ok((dst, tx, rx))
        }
        Err(e) => {
            tracing::debug!(error = %e, "passthrough connection ended with an error");
            Ok((dst, 0, 0))
        }
    }
}
