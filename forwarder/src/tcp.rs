//! L4: bytes in both directions until either side closes.

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::route::Route;

/// Large enough for bulk transfers to need few syscalls, small enough that
/// thousands of idle connections stay cheap.
const BUF_SIZE: usize = 32 * 1024;

pub async fn proxy(mut downstream: TcpStream, route: Arc<Route>) {
    let (addr, mut upstream) = match route.connect().await {
        Ok(up) => up,
        Err(e) => {
            tracing::warn!(error = %e, "closing downstream: no upstream connection");
            return;
        }
    };
    match tokio::io::copy_bidirectional_with_sizes(
        &mut downstream,
        &mut upstream,
        BUF_SIZE,
        BUF_SIZE,
    )
    .await
    {
        Ok((tx, rx)) => tracing::debug!(upstream = %addr, tx, rx, "tcp connection closed"),
        Err(e) => {
            tracing::debug!(upstream = %addr, error = %e, "tcp connection ended with an error")
        }
    }
}
