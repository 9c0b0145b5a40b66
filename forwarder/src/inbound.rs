//! Inbound connections under mesh mTLS: the TLS handshake (or, in
//! Permissive mode, the choice between mesh mTLS and pass-through), the
//! caller's identity, and authorization. A connection is re-checked when
//! the listener's permissions change and closed if it is no longer allowed.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::net::TcpStream;

use crate::authz::{Decision, Peer, Permissions};
use crate::config::MtlsMode;
use crate::listener::ListenerShared;
use crate::route::Route;
use crate::stats::ListenerStats;
use crate::tls::verify::{cert_sha256, uri_sans};
use crate::tls::{Detected, MaybeTls, MeshTls, PrefixedIo, detect};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An inbound's mesh policy: its TLS side and who may call it.
pub struct InboundMesh {
    pub tls: Arc<MeshTls>,
    pub permissions: Permissions,
}

pub type InboundIo =
    MaybeTls<PrefixedIo<TcpStream>, tokio_rustls::server::TlsStream<PrefixedIo<TcpStream>>>;

/// Completes the handshake the inbound's mode calls for and says who the
/// caller is. Strict takes mesh mTLS only: plaintext fails the handshake.
/// `http`: the inbound serves HTTP, and takes HTTP/2 from a caller that
/// offers it.
pub async fn accept(
    stream: TcpStream,
    mesh: &InboundMesh,
    http: bool,
) -> io::Result<(InboundIo, Peer)> {
    let (verdict, io) = match mesh.tls.mode {
        MtlsMode::Strict => (Detected::MeshTls, PrefixedIo::new(Vec::new(), stream)),
        MtlsMode::Permissive => detect(stream).await?,
    };
    if verdict == Detected::Other {
        return Ok((InboundIo::Plain(io), Peer::Unauthenticated));
    }
    let config = if http {
        &mesh.tls.server_h2
    } else {
        &mesh.tls.server
    };
    let (tls, peer) = handshake(io, config, &mesh.tls.own_identity).await?;
    Ok((InboundIo::Tls(Box::new(tls)), peer))
}

/// The server side of mesh mTLS (`config`, one of a [`MeshTls`]'s), within
/// 10 s, and the caller it proved to be (a zone egress terminating for an
/// external service uses it too). `own`: this proxy's identity, for XFCC.
pub async fn handshake(
    io: PrefixedIo<TcpStream>,
    config: &Arc<rustls::ServerConfig>,
    own: &str,
) -> io::Result<(tokio_rustls::server::TlsStream<PrefixedIo<TcpStream>>, Peer)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "no client certificate"))?;
    let uris = uri_sans(leaf);
    let xfcc = xfcc(own, leaf, &uris);
    let sni = stream.get_ref().1.server_name().map(str::to_string);
    Ok((stream, Peer::Mesh { uris, xfcc, sni }))
}

/// Envoy's `x-forwarded-client-cert` with By, Hash and URI: the application
/// learns its caller's verified identity.
fn xfcc(own: &str, leaf: &[u8], uris: &[String]) -> Option<HeaderValue> {
    let hash = cert_sha256(leaf);
    let uri = uris.iter().find(|u| u.starts_with("spiffe://"))?;
    let (own, uri) = (xfcc_value(own), xfcc_value(uri));
    HeaderValue::from_str(&format!("By={own};Hash={hash};URI={uri}")).ok()
}

/// A value as Envoy writes it in XFCC: in double quotes (with `"` and `\`
/// escaped) when it holds `,`, `;`, `=` or `"`, so that no identity can read
/// as two, or as another field.
fn xfcc_value(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains([',', ';', '=', '"']) {
        return std::borrow::Cow::Borrowed(v);
    }
    let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
    std::borrow::Cow::Owned(format!("\"{escaped}\""))
}

/// Checks `peer` against the route's permissions, counting and logging the
/// outcome. True when the connection or request may go on.
pub fn authorize(route: &Route, peer: &Peer) -> bool {
    let Some(mesh) = &route.mesh else {
        return true;
    };
    let stats: &ListenerStats = &route.listener_stats;
    if let (MtlsMode::Strict, Peer::Unauthenticated) = (mesh.tls.mode, peer) {
        stats.rbac_denied.inc();
        tracing::info!(listener = %route.name, "denied: plaintext to a Strict inbound");
        return false;
    }
    admit(&mesh.permissions, stats, peer, &mesh.tls.own_identity)
}

/// What `permissions` say of `peer`, counted in `stats` and logged against
/// `destination` (this proxy's identity). True when it may go on.
pub fn admit(
    permissions: &Permissions,
    stats: &ListenerStats,
    peer: &Peer,
    destination: &str,
) -> bool {
    match permissions.check(peer) {
        Decision::Allow => {
            stats.rbac_allowed.inc();
            true
        }
        Decision::ShadowDeny(policy) => {
            stats.rbac_allowed.inc();
            stats.rbac_shadow_denied.inc();
            tracing::info!(source = peer.identity(), %destination, %policy, "would be denied (AllowWithShadowDeny)");
            true
        }
        Decision::Deny(policy) => {
            stats.rbac_denied.inc();
            tracing::info!(source = peer.identity(), %destination, policy = policy.unwrap_or("(no permission allows it)"), "denied by MeshTrafficPermission");
            false
        }
    }
}

/// Resolves when the listener's latest route no longer allows `peer`.
pub async fn revoked(shared: &ListenerShared, peer: &Peer) {
    let mut changes = shared.changes.subscribe();
    loop {
        if changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        let route = shared.route.load_full();
        if route.mesh.is_some() && !authorize(&route, peer) {
            tracing::info!(source = peer.identity(), listener = %route.name, "closing an established connection: no longer allowed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::xfcc_value;

    #[test]
    fn xfcc_values_that_could_split_are_quoted_as_envoy_does() {
        assert_eq!(xfcc_value("spiffe://default/web"), "spiffe://default/web");
        assert_eq!(
            xfcc_value("spiffe://default/web;URI=spiffe://default/admin"),
            "\"spiffe://default/web;URI=spiffe://default/admin\""
        );
        assert_eq!(xfcc_value("a,b"), "\"a,b\"");
        assert_eq!(xfcc_value("say \"hi\""), "\"say \\\"hi\\\"\"");
    }
}
