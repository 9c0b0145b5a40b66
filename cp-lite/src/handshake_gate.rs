//! TLS in front of the CP's gRPC servers (DP server, multi-zone sync),
//! bounded: a connection that has not finished its handshake within 10 s
//! is closed, and at most 256 handshakes run at once (further connections
//! wait in the kernel's backlog). Without the bounds, clients that open
//! connections and never speak hold descriptors for as long as they like,
//! before any token is checked.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_HANDSHAKES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("the server certificate or key cannot be used: {0}")]
    Identity(String),
}

/// A rustls server config for gRPC (ALPN h2) from PEM certificate and key.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, GateError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: &dyn std::fmt::Display| GateError::Identity(e.to_string());
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS connections of `listener`, each handshake bounded as above.
/// `what` names the server in logs.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    what: &'static str,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> {
    incoming_with(listener, config, what, HANDSHAKE_TIMEOUT, MAX_HANDSHAKES)
}

fn incoming_with(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    what: &'static str,
    timeout: Duration,
    max: usize,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(max));
    tokio::spawn(async move {
        loop {
            // The gRPC server went away: stop accepting.
            if tx.is_closed() {
                return;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(server = what, error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                drop(slot);
                match handshake {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(server = what, %peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => {
                        tracing::info!(server = what, %peer, ?timeout, "closed a connection that did not finish its TLS handshake in time")
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn config() -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        server_config(&cert.pem(), &key.serialize_pem()).expect("config")
    }

    /// Whether the server closes `conn` within `within`.
    async fn closed(conn: &mut TcpStream, within: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(within, conn.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_at_the_timeout_and_frees_its_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut stream = Box::pin(incoming_with(
            listener,
            config(),
            "test",
            Duration::from_secs(10),
            1,
        ));
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        // The one slot is held by the silent client; a second client waits
        // in the backlog.
        let mut second = TcpStream::connect(addr).await.expect("connect");
        assert!(
            !closed(&mut silent, Duration::from_secs(9)).await,
            "closed early"
        );
        assert!(
            closed(&mut silent, Duration::from_secs(2)).await,
            "open after 10 s"
        );
        // The slot is free: the second client's handshake starts then (and
        // times out in turn, as it never speaks either): 20 s in all.
        assert!(
            !closed(&mut second, Duration::from_secs(8)).await,
            "closed early"
        );
        assert!(
            closed(&mut second, Duration::from_secs(3)).await,
            "never handled"
        );
        // Nothing came out as a connection.
        let next = tokio::time::timeout(Duration::from_millis(10), stream.next()).await;
        assert!(next.is_err(), "a connection without a handshake was served");
    }
}
