//! A zone ingress or egress listener: each connection's TLS ClientHello is
//! read (not answered) for its SNI, and the connection, ClientHello
//! included, is spliced to an endpoint of the route for that name. The
//! mesh mTLS between the two sidecars passes through untouched: this proxy
//! holds no mesh certificate for it. A connection without SNI, or with one
//! no route serves, is closed and counted
//! (`envoy_listener_no_filter_chain_match`, as Envoy counts it).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::authz::{Decision, Peer};
use crate::copy;
use crate::route::{Route, SniTarget, Target, Terminate};
use crate::tls::verify::uri_sans;
use crate::tls::{PrefixedIo, peek_client_hello};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    let acceptor = tokio_rustls::TlsAcceptor::from(terminate.tls.server.clone());
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(downstream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            stats.ssl_connection_error.inc();
            tracing::info!(%sni, error = %e, "closed: mesh mTLS handshake failed");
            return;
        }
        Err(_) => {
            stats.ssl_connection_error.inc();
            tracing::info!(%sni, "closed: mesh mTLS handshake timed out");
            return;
        }
    };
    stats.ssl_handshake.inc();
    let uris = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| uri_sans(leaf))
        .unwrap_or_default();
    let peer = Peer::Mesh { uris, xfcc: None };
    match terminate.permissions.check(&peer) {
        Decision::Allow => stats.rbac_allowed.inc(),
        Decision::ShadowDeny(policy) => {
            stats.rbac_allowed.inc();
            stats.rbac_shadow_denied.inc();
            tracing::info!(source = peer.identity(), %sni, %policy, "would be denied (AllowWithShadowDeny)");
        }
        Decision::Deny(policy) => {
            stats.rbac_denied.inc();
            tracing::info!(source = peer.identity(), %sni, policy = policy.unwrap_or("(no permission allows it)"), "denied by MeshTrafficPermission");
            return;
        }
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
        .connect(addr, route.connect_timeout)
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
            copy::bidirectional(&mut downstream, &mut upstream).await
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
            copy::bidirectional(&mut downstream, &mut upstream).await
        }
    };
    match result {
        Ok((tx, rx)) => tracing::debug!(%sni, tx, rx, "external connection closed"),
        Err(e) => tracing::debug!(%sni, error = %e, "external connection ended with an error"),
    }
}
