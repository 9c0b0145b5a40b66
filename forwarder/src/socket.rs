//! Every socket option the forwarder sets, and every socket it reads
//! something unusual off, in one place.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nix::errno::Errno;
use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const BACKLOG: i32 = 1024;

/// Binds a listening socket now (so the caller learns of a conflict before
/// committing to a config). SO_REUSEADDR lets a restarted proxy rebind while
/// old connections sit in TIME_WAIT; it does not allow two live listeners.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Proxied streams carry small request/response exchanges: Nagle would add
/// latency for nothing.
pub fn tune_accepted(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// Connects to `addr`, from `source` (any port) when given.
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

/// Where a connection was headed before iptables redirected it to us
/// (SO_ORIGINAL_DST, or IP6T_SO_ORIGINAL_DST on IPv6 sockets).
/// IPv4-mapped IPv6 addresses come back as IPv4. `local` is the
/// stream's own address (the caller has it already), which says the family.
pub fn original_dst(stream: &TcpStream, local: SocketAddr) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let addr = if local.is_ipv4() {
        sock.original_dst_v4()?
    } else {
        sock.original_dst_v6()?
    };
    let addr = addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the original destination is not an IP address",
        )
    })?;
    Ok(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
}

/// The source address of the proxy's own connections to the local
/// application under transparent proxying: Kuma's iptables rules let
/// traffic from it through instead of redirecting it back to the proxy.
pub const PASSTHROUGH_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
pub const PASSTHROUGH_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// The source to connect to the local application at `dst` from: the
/// passthrough address of its family, unless `dst` is on loopback (the
/// rules never redirect the proxy's own traffic to loopback).
pub fn passthrough_source(dst: IpAddr) -> Option<IpAddr> {
    match dst {
        IpAddr::V4(ip) if !ip.is_loopback() => Some(PASSTHROUGH_SOURCE_V4.into()),
        IpAddr::V6(ip) if !ip.is_loopback() => Some(PASSTHROUGH_SOURCE_V6.into()),
        _ => None,
    }
}

/// Whether binding `addr` failed only because the host has no such
/// address family (IPv6 disabled): transparent listeners then skip it.
pub fn is_family_unavailable(addr: SocketAddr, e: &io::Error) -> bool {
    addr.is_ipv6()
        && matches!(
            e.raw_os_error(),
            Some(e) if e == Errno::EAFNOSUPPORT as i32 || e == Errno::EADDRNOTAVAIL as i32
        )
}
