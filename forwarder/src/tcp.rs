//! L4: bytes in both directions until either side closes.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::copy;
use crate::route::Route;

/// `client`: the downstream's address (a source-IP hash picks by it).
pub async fn proxy<S>(mut downstream: S, route: Arc<Route>, client: Option<std::net::IpAddr>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let route = match route.tcp_backend() {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(reason = %why, "closing downstream: the route's backend is not resolved");
            return;
        }
    };
    let (addr, mut upstream) = match route.connect(client).await {
        Ok(up) => up,
        Err(e) => {
            tracing::warn!(error = %e, "closing downstream: no upstream connection");
            return;
        }
    };
    match copy::bidirectional(&mut downstream, &mut upstream, Some(route.timeouts.idle)).await {
        Ok((tx, rx)) => tracing::debug!(upstream = %addr, tx, rx, "tcp connection closed"),
        Err(e) => {
            tracing::debug!(upstream = %addr, error = %e, "tcp connection ended with an error")
        }
    }
}
