//! L7: HTTP/1.1, HTTP/2 and gRPC through hyper. The downstream side speaks
//! whatever the client speaks (HTTP/1.1 or HTTP/2 with prior knowledge); the
//! upstream side speaks what the service's protocol says, over pooled
//! connections. Endpoints are picked per request from the listener's current
//! route, so endpoint changes reach keep-alive connections at once.

mod headers;
mod local_reply;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::{Either, Empty};
use hyper::body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::authz::Peer;
use crate::listener::ListenerShared;
use crate::route::{Route, UpstreamBody};
use local_reply::{LocalReply, ProxyBody};

/// Serves one downstream connection until it closes, or until `shutdown`
/// resolves: then in-flight requests finish and the connection is closed
/// (`Connection: close` / GOAWAY).
pub async fn serve<S>(
    stream: S,
    peer: Arc<Peer>,
    shared: Arc<ListenerShared>,
    conn_route: Arc<Route>,
    shutdown: impl Future<Output = ()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let service = service_fn(move |req| {
        let route = current_route(&shared, &conn_route);
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(forward(route, &peer, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => finished(res),
        _ = shutdown => {
            conn.as_mut().graceful_shutdown();
            finished(conn.await);
        }
    }
}

fn finished(res: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = res {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

/// The route for the next request: the listener's latest, unless its
/// protocol changed under this connection, which then keeps its own.
fn current_route(shared: &ListenerShared, conn_route: &Arc<Route>) -> Arc<Route> {
    let latest = shared.route.load_full();
    if latest.protocol.is_http() {
        latest
    } else {
        conn_route.clone()
    }
}

async fn forward(route: Arc<Route>, peer: &Peer, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let listener = &route.listener_stats;
    listener.rq_total.inc();
    let grpc = headers::is_grpc(req.headers());
    let result = if crate::inbound::authorize(&route, peer) {
        upstream(&route, peer, req).await
    } else {
        Err(LocalReply::Forbidden(format!(
            "RBAC: access denied: {} may not call {}",
            peer.identity(),
            route
                .mesh
                .as_ref()
                .map_or("", |m| m.tls.own_identity.as_str())
        )))
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(reply) => reply.into_response(grpc),
    };
    listener.rq_xx.record(resp.status().as_u16());
    listener.rq_time.observe(started.elapsed());
    resp
}

async fn upstream(
    route: &Route,
    peer: &Peer,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, LocalReply> {
    let cluster = &route.cluster.stats;
    let (parts, body) = req.into_parts();
    // No request byte reaches an endpoint that refused the connection, so a
    // request without a body can go to the next endpoint as it is. One whose
    // connection was reset before any response (a pooled connection to an
    // endpoint that just died) may have been seen, so only idempotent
    // methods are sent again then (RFC 9110 §9.2.2).
    let attempts = if body.is_end_stream() {
        route.connect_attempts().max(1)
    } else {
        1
    };
    let idempotent = parts.method.is_idempotent();
    let mut body = Some(body);
    let mut parts = Some(parts);
    let mut last_failure = None;
    for attempt in 1..=attempts {
        let Some(endpoint) = route.pick_for(attempt - 1) else {
            cluster.no_healthy_upstream.inc();
            if let Some(why) = &route.unavailable {
                return Err(LocalReply::Unavailable(why.clone()));
            }
            return Err(LocalReply::NoHealthyUpstream);
        };
        let upstream_body = match body.take() {
            Some(b) if attempts == 1 => Either::Left(b),
            _ => Either::Right(Empty::new()),
        };
        // The head is cloned only when another attempt may need it.
        let head = if attempt == attempts {
            parts.take()
        } else {
            parts.clone()
        };
        let Some(head) = head else { break };
        let mut req = headers::to_upstream(
            Request::from_parts(head, upstream_body),
            &endpoint.authority,
            route.protocol.upstream_h2(),
        )
        .map_err(LocalReply::BadRequest)?;
        if route.mesh.is_some() {
            headers::set_client_cert(req.headers_mut(), peer);
        }
        match send(route, endpoint.addr, req).await {
            Err(failure @ LocalReply::ConnectFailed(_)) if attempt < attempts => {
                last_failure = Some(failure)
            }
            Err(failure @ LocalReply::Reset(_)) if attempt < attempts && idempotent => {
                last_failure = Some(failure)
            }
            result => return result,
        }
        tracing::debug!(upstream = %endpoint.addr, "trying the next endpoint");
    }
    Err(last_failure.unwrap_or(LocalReply::NoHealthyUpstream))
}

async fn send(
    route: &Route,
    addr: SocketAddr,
    req: Request<UpstreamBody>,
) -> Result<Response<ProxyBody>, LocalReply> {
    let cluster = &route.cluster.stats;
    cluster.rq_total.inc();
    let started = Instant::now();
    let sent = tokio::time::timeout(
        route.request_timeout,
        route.cluster.client(route.protocol).request(req),
    )
    .await;
    let result = match sent {
        Ok(Ok(mut resp)) => {
            headers::strip_hop_by_hop(resp.headers_mut());
            Ok(resp.map(Either::Left))
        }
        Ok(Err(e)) => {
            let reason = local_reply::error_chain(&e);
            tracing::warn!(upstream = %addr, error = %reason, "upstream request failed");
            Err(if e.is_connect() {
                LocalReply::ConnectFailed(reason)
            } else {
                LocalReply::Reset(reason)
            })
        }
        Err(_) => {
            cluster.rq_timeout.inc();
            tracing::warn!(upstream = %addr, timeout = ?route.request_timeout, "upstream request timed out");
            Err(LocalReply::Timeout)
        }
    };
    let status = match &result {
        Ok(r) => r.status().as_u16(),
        Err(reply) => reply.status().as_u16(),
    };
    cluster.rq_xx.record(status);
    cluster.rq_time.observe(started.elapsed());
    result
}
