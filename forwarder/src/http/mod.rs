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
use crate::config::RetryPolicy;
use crate::endpoints::{Endpoint, EndpointSet};
use crate::listener::ListenerShared;
use crate::outlier::{self, Ejection};
use crate::route::{Route, Target, UpstreamBody};
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
    let (parts, body) = req.into_parts();
    // A request without a body can be sent again as it is; one with a body
    // streams through and is sent once. Failures where the endpoint may
    // have acted on the request (a reset, a gateway error, no answer) are
    // retried for idempotent methods only (RFC 9110 §9.2.2); a refused
    // connection saw nothing, whatever the method.
    let tries = match &route.target {
        Target::Balanced(_) if body.is_end_stream() => 1 + route.resilience.retry.num_retries,
        _ => 1,
    };
    let idempotent = parts.method.is_idempotent();
    let deadline = tokio::time::Instant::now() + route.request_timeout;
    let mut body = Some(body);
    let mut parts = Some(parts);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_failure = None;
    for attempt in 0..tries {
        if attempt > 0 {
            route.cluster.stats.rq_retry.inc();
            tokio::time::sleep_until(
                deadline
                    .min(tokio::time::Instant::now() + backoff(&route.resilience.retry, attempt)),
            )
            .await;
        }
        let picked = match &route.target {
            Target::Local(endpoint) => Some((endpoint, None)),
            Target::Balanced(set) => set.pick(&tried, outlier::now_ms()).map(|e| (e, Some(set))),
            Target::BySni(_) => None,
        };
        let Some((endpoint, set)) = picked else {
            if attempt > 0 {
                break; // every endpoint was tried
            }
            route.cluster.stats.no_healthy_upstream.inc();
            if let Some(why) = &route.unavailable {
                return Err(LocalReply::Unavailable(why.clone()));
            }
            return Err(LocalReply::NoHealthyUpstream);
        };
        let upstream_body = match body.take() {
            Some(b) if tries == 1 => Either::Left(b),
            _ => Either::Right(Empty::new()),
        };
        // The head is cloned only when another attempt may need it.
        let head = if attempt + 1 == tries {
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
        let result = send(route, endpoint, set, req, deadline).await;
        let gateway_error = matches!(&result, Ok(r) if is_gateway_error(r.status()));
        if let (Some(set), true) = (set, gateway_error || result.is_err()) {
            route
                .cluster
                .endpoint_failed(endpoint, set, &route.resilience.outlier);
        }
        let retriable = match &result {
            Err(LocalReply::ConnectFailed(_)) => true,
            Err(LocalReply::Reset(_) | LocalReply::Stalled) => idempotent,
            Ok(_) => gateway_error && idempotent,
            Err(_) => false,
        };
        if !retriable || attempt + 1 == tries {
            return result;
        }
        tracing::debug!(upstream = %endpoint.addr, "trying another endpoint");
        tried.push(endpoint.addr);
        last_failure = Some(result);
    }
    last_failure.unwrap_or(Err(LocalReply::NoHealthyUpstream))
}

/// 502, 503 and 504: what Kuma's default retry policy calls a gateway error.
fn is_gateway_error(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// The wait before retry `n` (from 1): exponential from the base interval,
/// capped, with full jitter so that many callers do not retry in step.
fn backoff(policy: &RetryPolicy, n: u32) -> std::time::Duration {
    let cap = policy
        .base_interval
        .saturating_mul(1 << (n - 1).min(16))
        .min(policy.max_interval);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    cap.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

/// Sends one try to `endpoint` and waits for its response until
/// `deadline`. When the endpoint is one of a set, the wait also ends once
/// the endpoint looks frozen (see `OutlierDetection::stalled_after`).
async fn send(
    route: &Route,
    endpoint: &Endpoint,
    set: Option<&EndpointSet>,
    req: Request<UpstreamBody>,
    deadline: tokio::time::Instant,
) -> Result<Response<ProxyBody>, LocalReply> {
    let cluster = &route.cluster.stats;
    let addr = endpoint.addr;
    cluster.rq_total.inc();
    let started = Instant::now();
    let waited = wait_for_response(route, endpoint, set, req, deadline).await;
    let now = outlier::now_ms();
    let result = match waited {
        Waited::Response(Ok(mut resp)) => {
            endpoint.health.answered(now);
            route.cluster.health.answered(now);
            if !is_gateway_error(resp.status()) {
                endpoint.health.succeeded(now);
            }
            headers::strip_hop_by_hop(resp.headers_mut());
            Ok(resp.map(Either::Left))
        }
        Waited::Response(Err(e)) => {
            let reason = local_reply::error_chain(&e);
            tracing::warn!(upstream = %addr, error = %reason, "upstream request failed");
            Err(if e.is_connect() {
                LocalReply::ConnectFailed(reason)
            } else {
                LocalReply::Reset(reason)
            })
        }
        Waited::Frozen => {
            tracing::warn!(upstream = %addr, "upstream answers nothing while its peers do: giving up on it");
            Err(LocalReply::Stalled)
        }
        Waited::Deadline => {
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

enum Waited {
    Response(Result<Response<Incoming>, hyper_util::client::legacy::Error>),
    Frozen,
    Deadline,
}

async fn wait_for_response(
    route: &Route,
    endpoint: &Endpoint,
    set: Option<&EndpointSet>,
    req: Request<UpstreamBody>,
    deadline: tokio::time::Instant,
) -> Waited {
    let _in_flight = endpoint.health.start_request();
    let sent_at = outlier::now_ms();
    let outlier = &route.resilience.outlier;
    // Checked a few times per stall period, and only by requests that wait.
    let check_every = outlier
        .stalled_after
        .filter(|_| set.is_some())
        .map(|d| d / 4);
    let response = route.cluster.client(route.protocol).request(req);
    tokio::pin!(response);
    loop {
        let wake = match check_every {
            Some(every) => deadline.min(tokio::time::Instant::now() + every),
            None => deadline,
        };
        tokio::select! {
            r = &mut response => return Waited::Response(r),
            () = tokio::time::sleep_until(wake) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Waited::Deadline;
        }
        let now = outlier::now_ms();
        let health = &endpoint.health;
        // Taken out by another request while this one waited.
        let out = health.abandoned(outlier, sent_at, now);
        let stalled = health.stalled(outlier, sent_at, now, route.cluster.health.last_response());
        if let (true, Some(set)) = (stalled, set) {
            route
                .cluster
                .eject(endpoint, set, outlier, Ejection::Stalled);
        }
        if out || stalled {
            return Waited::Frozen;
        }
    }
}
