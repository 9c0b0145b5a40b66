//! L4: bytes in both directions until either side closes.

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::copy;
use crate::route::Route;

pub async fn proxy(mut downstream: TcpStream, route: Arc<Route>) {
    let (addr, mut upstream) = match route.connect().await {
        Ok(up) => up,
        Err(e) => {
            tracing::warn!(error = %e, "closing downstream: no upstream connection");
            return;
        }
    };
    match copy::bidirectional(&mut downstream, &mut upstream).await {
        Ok((tx, rx)) => tracing::debug!(upstream = %addr, tx, rx, "tcp connection closed"),
        Err(e) => {
            tracing::debug!(upstream = %addr, error = %e, "tcp connection ended with an error")
        }
    }
}
