//! A zone ingress or egress listener: each connection's TLS ClientHello is
//! read (not answered) for its SNI, and the connection, ClientHello
//! included, is spliced to an endpoint of the route for that name. The
//! mesh mTLS between the two sidecars passes through untouched: this proxy
//! holds no mesh certificate for it. A connection without SNI, or with one
//! no route serves, is closed and counted
//! (`envoy_listener_no_filter_chain_match`, as Envoy counts it).

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::copy;
use crate::route::{Route, SniTarget, Target};
use crate::tls::peek_client_hello;

pub async fn serve(stream: TcpStream, route: Arc<Route>) {
    let Target::BySni(table) = &route.target else {
        return;
    };
    let stats = &route.listener_stats;
    let (hello, mut downstream) = match peek_client_hello(stream).await {
        Ok(read) => read,
        Err(e) => {
            tracing::debug!(error = %e, "connection ended before its ClientHello");
            return;
        }
    };
    let Some(sni) = hello.and_then(|h| h.sni) else {
        stats.no_filter_chain_match.inc();
        tracing::info!(listener = %route.name, "closed: not TLS, or no SNI to route by");
        return;
    };
    let Some(target) = table.get(&sni) else {
        stats.no_filter_chain_match.inc();
        tracing::info!(listener = %route.name, %sni, "closed: no route for this SNI");
        return;
    };
    let Some(mut upstream) = connect(target, &route).await else {
        return;
    };
    match copy::bidirectional(&mut downstream, &mut upstream).await {
        Ok((tx, rx)) => tracing::debug!(%sni, tx, rx, "passthrough connection closed"),
        Err(e) => tracing::debug!(%sni, error = %e, "passthrough connection ended with an error"),
    }
}

/// Connects to an endpoint of `target`, moving on when one refuses.
async fn connect(target: &SniTarget, route: &Route) -> Option<crate::connector::ClusterStream> {
    for attempt in 0..target.endpoints.attempts() {
        let addr = target.endpoints.pick_for(attempt)?.addr;
        match target
            .cluster
            .connector
            .connect(addr, route.connect_timeout)
            .await
        {
            Ok(s) => return Some(s),
            Err(e) => tracing::warn!(upstream = %addr, error = %e, "upstream connect failed"),
        }
    }
    target.cluster.stats.no_healthy_upstream.inc();
    tracing::info!(listener = %route.name, "closed: no endpoint of the route could be reached");
    None
}
