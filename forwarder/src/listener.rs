//! One listener of the config and its accept loop. The socket knows
//! nothing of protocols: each accepted connection takes the listener's
//! route at that moment and is served by it until it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

use crate::access_log::Downstream;
use crate::authz::Peer;
use crate::drain::{self, DrainTrigger, DrainWatch};
use crate::route::{Route, Target};
use crate::stats::ListenerStats;
use crate::{http, inbound, socket, tcp, zone_proxy};

/// State shared by a listener and its connections.
pub struct ListenerShared {
    pub route: ArcSwap<Route>,
    /// Ticks at each new route, so that connections can re-check whether
    /// they are still allowed.
    pub changes: watch::Sender<()>,
    /// Signalled when the listener leaves the config: its connections
    /// finish what is in flight and close.
    pub stopped: DrainWatch,
}

impl ListenerShared {
    pub fn set_route(&self, route: Arc<Route>) {
        self.route.store(route);
        self.changes.send_replace(());
    }
}

/// A listener of the config: with its own socket and accept loop, or
/// unbound (a VIP outbound, or an inbound under transparent proxying),
/// handed connections by a transparent listener.
pub struct RunningListener {
    pub shared: Arc<ListenerShared>,
    pub bound: bool,
    stop: DrainTrigger,
}

impl RunningListener {
    /// Starts accepting on `socket`. Connections hold `process` until they
    /// end, so that a process drain can wait for them.
    pub fn spawn(socket: TcpListener, route: Arc<Route>, process: DrainWatch) -> RunningListener {
        let mut listener = RunningListener::unbound(route);
        listener.bound = true;
        let span = tracing::info_span!("listener", addr = ?socket.local_addr().ok());
        tokio::spawn(accept_loop(socket, listener.shared.clone(), process).instrument(span));
        listener
    }

    pub fn unbound(route: Arc<Route>) -> RunningListener {
        let (stop, stopped) = drain::channel();
        let shared = Arc::new(ListenerShared {
            route: ArcSwap::new(route),
            changes: watch::Sender::new(()),
            stopped,
        });
        RunningListener {
            shared,
            bound: false,
            stop,
        }
    }

    /// Stops accepting; open connections finish their in-flight work.
    pub fn stop(self) {
        self.stop.signal();
    }
}

/// Keeps `cx_active` right however the connection task ends.
struct ActiveConnection(Arc<ListenerStats>);

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.cx_active.dec();
    }
}

async fn accept_loop(socket: TcpListener, shared: Arc<ListenerShared>, process: DrainWatch) {
    let stopped = shared.stopped.clone();
    accept_until(&socket, &stopped, &process, |stream, peer| {
        spawn_connection(stream, peer, shared.clone(), &process);
    })
    .await;
    tracing::info!("listener stopped accepting");
}

/// Accepts on `socket` until `stopped` or `process` is signalled, handing
/// each tuned connection to `on_accept`.
pub async fn accept_until(
    socket: &TcpListener,
    stopped: &DrainWatch,
    process: &DrainWatch,
    mut on_accept: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped.signaled() => break,
            _ = process.signaled() => break,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                socket::tune_accepted(&stream);
                on_accept(stream, peer);
            }
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one accepted connection on the listener's route of this moment.
pub fn spawn_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ListenerShared>,
    process: &DrainWatch,
) {
    let route = shared.route.load_full();
    route.listener_stats.cx_total.inc();
    route.listener_stats.cx_active.inc();
    let active = ActiveConnection(route.listener_stats.clone());
    let span = tracing::debug_span!("conn", listener = %route.name, %peer, protocol = route.protocol.as_str());
    let process = process.clone();
    tokio::spawn(
        async move {
            let stopped = shared.stopped.clone();
            let shutdown = async {
                tokio::select! {
                    _ = stopped.signaled() => {},
                    _ = process.signaled() => {},
                }
            };
            serve_connection(stream, shared, route, shutdown).await;
            // `process` (borrowed by `shutdown`) is released here, when
            // the task ends: that is what a process drain waits for.
            drop(active);
        }
        .instrument(span),
    );
}

async fn serve_connection(
    stream: TcpStream,
    shared: Arc<ListenerShared>,
    route: Arc<Route>,
    shutdown: impl Future<Output = ()>,
) {
    if let Target::BySni(_) = route.target {
        return zone_proxy::serve(stream, route).await;
    }
    // MeshRateLimit `local.tcp`: beyond the limit a connection is closed
    // before anything else is spent on it.
    if let Some(bucket) = &route.traffic.tcp_limit
        && !bucket.try_take()
    {
        route.listener_stats.tcp_rate_limited.inc();
        tracing::debug!("connection closed: MeshRateLimit connection rate reached");
        return;
    }
    let client = Downstream::new(stream.peer_addr().ok(), stream.local_addr().ok());
    let Some(mesh) = &route.mesh else {
        let peer = Arc::new(Peer::Unauthenticated);
        return serve_stream(stream, peer, client, shared, route, shutdown).await;
    };
    let stats = route.listener_stats.clone();
    let (io, peer) = match inbound::accept(stream, mesh, route.protocol.is_http()).await {
        Ok((io, peer)) => (io, Arc::new(peer)),
        Err(e) => {
            stats.ssl_connection_error.inc();
            tracing::info!(error = %e, "inbound connection refused: mesh mTLS handshake failed");
            return;
        }
    };
    if let inbound::InboundIo::Tls(tls) = &io {
        stats.ssl_handshake.inc();
        if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            stats.ssl_session_reused.inc();
        }
    }
    // HTTP is authorized per request (a denial is a 403); TCP here, once.
    if !route.protocol.is_http() && !inbound::authorize(&route, &peer) {
        return;
    }
    let watched = shared.clone();
    tokio::select! {
        _ = serve_stream(io, peer.clone(), client, shared, route, shutdown) => {},
        _ = inbound::revoked(&watched, &peer) => {},
    }
}

async fn serve_stream<S>(
    io: S,
    peer: Arc<Peer>,
    client: Downstream,
    shared: Arc<ListenerShared>,
    route: Arc<Route>,
    shutdown: impl Future<Output = ()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if route.protocol.is_http() {
        http::serve(io, peer, client, shared, route, shutdown).await;
    } else {
        tcp::proxy(io, route, &peer, client).await;
    }
}
