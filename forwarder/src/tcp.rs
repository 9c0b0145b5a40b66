//! L4: bytes in both directions until either side closes.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::access_log::{ConnectionOutcome, Downstream, LogRecord};
use crate::authz::Peer;
use crate::copy;
use crate::route::Route;

/// `client`: the downstream connection (a source-IP hash picks by its
/// address; the access log names it).
pub async fn proxy<S>(mut downstream: S, route: Arc<Route>, peer: &Peer, client: Downstream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = (SystemTime::now(), Instant::now());
    let outcome = copy_through(&mut downstream, &route, client).await;
    if let Some(log) = &route.traffic.log {
        log.emit(LogRecord::closed(client, peer, started, outcome));
    }
}

async fn copy_through<S>(
    downstream: &mut S,
    route: &Arc<Route>,
    client: Downstream,
) -> ConnectionOutcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let route = match route.tcp_backend() {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(reason = %why, "closing downstream: the route's backend is not resolved");
            return Err(("NR", why.to_string()));
        }
    };
    let (addr, mut upstream) = match route.connect(client.ip()).await {
        Ok(up) => up,
        Err(e) => {
            tracing::warn!(error = %e, "closing downstream: no upstream connection");
            return Err(("UF", e.to_string()));
        }
    };
    match copy::bidirectional(downstream, &mut upstream, Some(route.timeouts.idle)).await {
        Ok((tx, rx)) => {
            tracing::debug!(upstream = %addr, tx, rx, "tcp connection closed");
            Ok((addr, tx, rx))
        }
        Err(e) => {
            tracing::debug!(upstream = %addr, error = %e, "tcp connection ended with an error");
            Ok((addr, 0, 0))
        }
    }
}
