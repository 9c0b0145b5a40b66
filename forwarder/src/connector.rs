//! Upstream connections: a stream that counts bytes and active connections
//! into its cluster's stats, mesh mTLS on top when the mesh has it, and the
//! hyper connector that makes them.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::socket;
use crate::stats::ClusterStats;
use crate::tls::{ALPN_H2, MaybeTls, MeshClientTls};

/// A TCP stream to an upstream whose traffic shows in its cluster's stats.
/// Counting happens once per read or write call, not per byte.
pub struct CountedStream {
    inner: TcpStream,
    stats: Arc<ClusterStats>,
}

impl CountedStream {
    /// Connects within `timeout`, counting the attempt and its outcome.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        stats: Arc<ClusterStats>,
        timeout: Duration,
    ) -> io::Result<CountedStream> {
        let result = match tokio::time::timeout(timeout, socket::connect(addr, source)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {timeout:?}"),
            )),
        };
        match result {
            Ok(inner) => {
                stats.cx_total.inc();
                stats.cx_active.inc();
                Ok(CountedStream { inner, stats })
            }
            Err(e) => {
                stats.cx_connect_fail.inc();
                Err(e)
            }
        }
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.stats.cx_active.dec();
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.stats.cx_rx_bytes.add(n as u64);
        }
        r
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.stats.cx_tx_bytes.add(n as u64);
        }
        r
    }

    // Passed on, so that hyper writes head and body with one writev
    // instead of copying the body into its own buffer first.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.stats.cx_tx_bytes.add(n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The client side of mesh mTLS for one cluster, set once: a renewed
/// certificate or another CA makes another cluster.
pub type UpstreamTls = ArcSwapOption<MeshClientTls>;

/// A connection to an upstream: plain, or mesh mTLS.
pub type ClusterStream = MaybeTls<CountedStream, TlsStream<CountedStream>>;

impl ClusterConnector {
    /// Connects, then completes the TLS handshake when the cluster has mesh
    /// mTLS, all within `timeout`. A failed handshake counts as a failed
    /// connection.
    pub async fn connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<ClusterStream> {
        let tls = self.tls.load_full();
        let stats = &self.stats;
        let max = self
            .max_connections
            .load(std::sync::atomic::Ordering::Relaxed);
        if max > 0 && stats.cx_active.get() >= i64::from(max) {
            stats.cx_overflow.inc();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("circuit breaker: maxConnections ({max}) are open"),
            ));
        }
        let started = tokio::time::Instant::now();
        let tcp = CountedStream::connect(addr, self.source, stats.clone(), timeout).await?;
        let Some(tls) = tls else {
            return Ok(ClusterStream::Plain(tcp));
        };
        let config = if self.offer_h2 { &tls.h2 } else { &tls.kuma };
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        // The SNI is what a zone ingress or egress on the way routes by;
        // the peer's identity is checked by URI SAN whatever the name.
        let name = self
            .sni
            .clone()
            .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => Ok(ClusterStream::Tls(Box::new(s))),
            Ok(Err(e)) => {
                stats.cx_connect_fail.inc();
                Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("mesh mTLS handshake failed: {e}"),
                ))
            }
            Err(_) => {
                stats.cx_connect_fail.inc();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("mesh mTLS handshake timed out after {timeout:?}"),
                ))
            }
        }
    }
}

impl Connection for ClusterStream {
    /// A Koguma peer that chose `h2` gets HTTP/2 on this connection, which
    /// the pool then shares between requests.
    fn connected(&self) -> Connected {
        match self {
            ClusterStream::Tls(s) if s.get_ref().1.alpn_protocol() == Some(ALPN_H2) => {
                Connected::new().negotiated_h2()
            }
            _ => Connected::new(),
        }
    }
}

/// Makes pooled hyper connections for one cluster. The request URI's
/// authority is always an IP:port chosen by the load balancer.
#[derive(Clone)]
pub struct ClusterConnector {
    pub stats: Arc<ClusterStats>,
    pub timeout: Duration,
    pub tls: Arc<UpstreamTls>,
    /// The local address connections leave from; `None`: the kernel's pick.
    pub source: Option<IpAddr>,
    /// The server name sent under mesh mTLS; `None`: none (an IP address).
    pub sni: Option<rustls::pki_types::ServerName<'static>>,
    /// Where every connection goes, whatever the URI says; `None`: to the
    /// URI's authority.
    pub pinned: Option<SocketAddr>,
    /// Whether mesh mTLS offers ALPN `h2` (pooled HTTP/1.1 requests, which
    /// a Koguma peer then takes over HTTP/2).
    pub offer_h2: bool,
    /// MeshCircuitBreaker `maxConnections`, shared by every client of the
    /// cluster and set by each config; 0: no limit.
    pub max_connections: Arc<std::sync::atomic::AtomicU32>,
}

impl ClusterConnector {
    /// Connections to `addr` only, which stay in the protocol they were
    /// made for (HTTP/1.1 for upgrades and CONNECT, HTTP/2 by prior
    /// knowledge for HTTP/2 services).
    pub fn pinned_to(&self, addr: SocketAddr) -> ClusterConnector {
        ClusterConnector {
            pinned: Some(addr),
            offer_h2: false,
            ..self.clone()
        }
    }
}

impl tower::Service<Uri> for ClusterConnector {
    type Response = TokioIo<ClusterStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let addr: SocketAddr = this
                .pinned
                .or_else(|| uri.authority().and_then(|a| a.as_str().parse().ok()))
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("not an upstream address: {uri}"),
                    )
                })?;
            Ok(TokioIo::new(this.connect(addr, this.timeout).await?))
        })
    }
}
