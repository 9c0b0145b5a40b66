//! Every socket option the forwarder sets, in one place.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};
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

pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}
