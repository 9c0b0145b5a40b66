//! Relaying a query, byte for byte, to the upstream nameserver: over UDP
//! when it came over UDP, over TCP when it came over TCP.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Largest answer taken over UDP (EDNS payloads rarely pass 4 KiB).
const MAX_UDP: usize = 65_535;

#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub timeout: Duration,
}

impl Upstream {
    pub async fn exchange(&self, query: &[u8], tcp: bool) -> io::Result<Vec<u8>> {
        let attempt = async {
            if tcp {
                self.over_tcp(query).await
            } else {
                self.over_udp(query).await
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer from {} within {:?}", self.addr, self.timeout),
                )
            })?
    }

    async fn over_udp(&self, query: &[u8]) -> io::Result<Vec<u8>> {
        let local: SocketAddr = if self.addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(self.addr).await?;
        socket.send(query).await?;
        let mut buf = vec![0; MAX_UDP];
        loop {
            let n = socket.recv(&mut buf).await?;
            // A stray datagram (not the answer to this query's id) is
            // dropped, not relayed.
            if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }

    async fn over_tcp(&self, query: &[u8]) -> io::Result<Vec<u8>> {
        let len = u16::try_from(query.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
        let mut stream = TcpStream::connect(self.addr).await?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let n = stream.read_u16().await?;
        let mut buf = vec![0; usize::from(n)];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    }
}
