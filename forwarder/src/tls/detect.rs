//! Permissive inbounds take mesh mTLS, plaintext and the application's own
//! TLS on one port. The first bytes tell them apart: a TLS ClientHello that
//! offers ALPN `kuma` is mesh traffic; anything else is passed through
//! untouched, bytes already read included (after linkerd's `detect`).

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

/// Reads the start of `io` and says what it is; the bytes read are returned
/// in front of the stream.
pub async fn detect<S: AsyncRead + Unpin>(mut io: S) -> io::Result<(Detected, PrefixedIo<S>)> {
    let mut buf = Vec::with_capacity(1024);
    let verdict = loop {
        if buf.len() >= MAX_PEEK {
            break Detected::Other;
        }
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout(FIRST_BYTES_TIMEOUT, io.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => break Detected::Other,
        };
        if n == 0 {
            break Detected::Other;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf[0] != 0x16 {
            break Detected::Other; // not a TLS handshake record
        }
        let mut acceptor = rustls::server::Acceptor::default();
        let mut rd: &[u8] = &buf;
        if acceptor.read_tls(&mut rd).is_err() {
            break Detected::Other;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let kuma = accepted
                    .client_hello()
                    .alpn()
                    .is_some_and(|mut protos| protos.any(|p| p == super::ALPN_KUMA));
                break if kuma {
                    Detected::MeshTls
                } else {
                    Detected::Other
                };
            }
            Ok(None) => continue, // the ClientHello is not all here yet
            Err(_) => break Detected::Other,
        }
    };
    Ok((verdict, PrefixedIo::new(buf, io)))
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
}
