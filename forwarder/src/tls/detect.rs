//! Permissive inbounds take mesh mTLS, plaintext and the application's own
//! TLS on one port. The first bytes tell them apart: a TLS ClientHello that
//! offers ALPN `kuma` is mesh traffic; anything else is passed through
//! untouched, bytes already read included (after linkerd's `detect`).
//! `peek_client_hello` is the same reading for whoever routes by what the
//! ClientHello says (a zone ingress, by SNI) without terminating TLS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// A ClientHello fits in one TLS record (16 KiB plus its header).
const MAX_PEEK: usize = 16 * 1024 + 5;
/// Protocols where the server speaks first send nothing: after this the
/// connection is taken as plaintext.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    MeshTls,
    /// Plaintext, or TLS that is not the mesh's.
    Other,
}

/// What a ClientHello says that routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The server name the client asked for, if any.
    pub sni: Option<String>,
    /// Whether it offers ALPN `kuma` (mesh mTLS between sidecars).
    pub mesh_alpn: bool,
}

/// Reads the start of `io` up to a whole ClientHello; `None` when it is not
/// TLS (or says nothing within a second). The bytes read are returned in
/// front of the stream, so that TLS can go on end to end.
pub async fn peek_client_hello<S: AsyncRead + Unpin>(
    mut io: S,
) -> io::Result<(Option<ClientHelloInfo>, PrefixedIo<S>)> {
    let mut buf = Vec::with_capacity(1024);
    let info = loop {
        if buf.len() >= MAX_PEEK {
            break None;
        }
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout(FIRST_BYTES_TIMEOUT, io.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => break None,
        };
        if n == 0 {
            break None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf[0] != 0x16 {
            break None; // not a TLS handshake record
        }
        let mut acceptor = rustls::server::Acceptor::default();
        let mut rd: &[u8] = &buf;
        if acceptor.read_tls(&mut rd).is_err() {
            break None;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                break Some(ClientHelloInfo {
                    sni: hello.server_name().map(str::to_string),
                    mesh_alpn: hello
                        .alpn()
                        .is_some_and(|mut protos| protos.any(|p| p == super::ALPN_KUMA)),
                });
            }
            Ok(None) => continue, // the ClientHello is not all here yet
            Err(_) => break None,
        }
    };
    Ok((info, PrefixedIo::new(buf, io)))
}

/// Reads the start of `io` and says what it is; the bytes read are returned
/// in front of the stream.
pub async fn detect<S: AsyncRead + Unpin>(io: S) -> io::Result<(Detected, PrefixedIo<S>)> {
    let (info, io) = peek_client_hello(io).await?;
    let verdict = match info {
        Some(hello) if hello.mesh_alpn => Detected::MeshTls,
        _ => Detected::Other,
    };
    Ok((verdict, io))
}

/// A stream that first yields `prefix`, then reads from `inner`.
pub struct PrefixedIo<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> PrefixedIo<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> PrefixedIo<S> {
        PrefixedIo {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new(); // give the memory back
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn plaintext_is_passed_through_with_the_bytes_read() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (verdict, mut io) = detect(server).await.unwrap();
        assert_eq!(verdict, Detected::Other);
        let mut got = vec![0u8; 18];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n\r\n");
    }

    /// The first flight of a real rustls client asking for `sni`.
    fn client_hello(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
        use std::sync::Arc;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn a_client_hello_gives_its_sni_and_every_byte_stays() {
        // The cross-zone SNI a sidecar will send: rustls must take it.
        let tags = [(
            "kuma.io/service".to_string(),
            "backend_demo_svc_80".to_string(),
        )];
        let sni = koguma_types::sni::cross_zone_sni("default", &tags.into_iter().collect());
        let hello = client_hello(&sni, &[crate::tls::ALPN_KUMA]);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        // In two pieces, as a slow network would deliver it.
        let (first, rest) = hello.split_at(10);
        client.write_all(first).await.unwrap();
        let writer = {
            let rest = rest.to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                client.write_all(&rest).await.unwrap();
                client
            })
        };
        let (info, mut io) = peek_client_hello(server).await.unwrap();
        let _client = writer.await.unwrap();
        assert_eq!(
            info,
            Some(ClientHelloInfo {
                sni: Some(sni),
                mesh_alpn: true,
            })
        );
        let mut got = vec![0u8; hello.len()];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, hello, "the ClientHello must pass through untouched");
    }
}
