//! A zone ingress or egress listener: each connection's TLS ClientHello is
//! read (not answered) for its SNI, and the connection, ClientHello
//! included, is spliced to an endpoint of the route for that name. The
//! mesh mTLS between the two sidecars passes through untouched: this proxy
//! holds no mesh certificate for it. A connection without SNI, or with one
//! no route serves, is closed and counted
//! (`envoy_listener_no_filter_chain_match`, as Envoy counts it).

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::endpoints::PickKey;
use crate::route::{Route, SniTarget, Target, Terminate};
use crate::tls::{PrefixedIo, peek_client_hello};
use crate::{copy, inbound};

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
    if let Some(terminate) = &target.terminate {
        return external(downstream, terminate, target, &route, &sni).await;
    }
    let connected = target
        .cluster
        .connect_first(
            &target.endpoints,
            &PickKey::default(),
            &route.resilience,
            route.timeouts.connect,
        )
        .await;
    let Ok((_, mut upstream)) = connected else {
        target.cluster.stats.no_healthy_upstream.inc();
        tracing::info!(listener = %route.name, "closed: no endpoint of the route could be reached");
        return;
    };
    match copy::bidirectional(&mut downstream, &mut upstream, Some(route.timeouts.idle)).await {
        Ok((tx, rx)) => tracing::debug!(%sni, tx, rx, "passthrough connection closed"),
        Err(e) => tracing::debug!(%sni, error = %e, "passthrough connection ended with an error"),
    }
}

/// Mesh mTLS ends here: the caller's certificate is checked against the
/// route's permissions, then a connection of our own (plain or TLS) goes to
/// the external host.
async fn external(
    downstream: PrefixedIo<TcpStream>,
    terminate: &Terminate,
    target: &SniTarget,
    route: &Route,
    sni: &str,
) {
    let stats = &route.listener_stats;
    let (tls, peer) = match inbound::handshake(
        downstream,
        &terminate.tls.server,
        &terminate.tls.own_identity,
    )
    .await
    {
        Ok(accepted) => accepted,
        Err(e) => {
            stats.ssl_connection_error.inc();
            tracing::info!(%sni, error = %e, "closed: mesh mTLS handshake failed");
            return;
        }
    };
    stats.ssl_handshake.inc();
    if !inbound::admit(
        &terminate.permissions,
        stats,
        &peer,
        &terminate.tls.own_identity,
    ) {
        return;
    }
    let mut downstream = tls;
    let addr = match tokio::net::lookup_host((terminate.host.as_str(), terminate.port)).await {
        Ok(mut addrs) => addrs.next(),
        Err(e) => {
            tracing::warn!(host = %terminate.host, error = %e, "cannot resolve the external host");
            None
        }
    };
    let Some(addr) = addr else {
        target.cluster.stats.no_healthy_upstream.inc();
        return;
    };
    let tcp = match target
        .cluster
        .connector
        .connect(addr, route.timeouts.connect)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(upstream = %addr, error = %e, "external host connect failed");
            return;
        }
    };
    let result = match &terminate.upstream_tls {
        None => {
            let mut upstream = tcp;
            copy::bidirectional(&mut downstream, &mut upstream, Some(route.timeouts.idle)).await
        }
        Some((config, name)) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let mut upstream = match connector.connect(name.clone(), tcp).await {
                Ok(s) => s,
                Err(e) => {
                    target.cluster.stats.cx_connect_fail.inc();
                    tracing::warn!(upstream = %addr, error = %e, "TLS to the external host failed");
                    return;
                }
            };
            copy::bidirectional(&mut downstream, &mut upstream, Some(route.timeouts.idle)).await
        }
    };
    match result {
        Ok((tx, rx)) => tracing::debug!(%sni, tx, rx, "external connection closed"),
        Err(e) => tracing::debug!(%sni, error = %e, "external connection ended with an error"),
    }
}
