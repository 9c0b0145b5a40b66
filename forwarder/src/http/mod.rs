//! L7: HTTP/1.1, HTTP/2 and gRPC through hyper. The downstream side speaks
//! whatever the client speaks (HTTP/1.1 or HTTP/2 with prior knowledge); the
//! upstream side speaks what the service's protocol says, over pooled
//! connections. Endpoints are picked per request from the listener's current
//! route, so endpoint changes reach keep-alive connections at once.

mod conn_watch;
mod headers;
mod local_reply;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{Either, Empty};
use hyper::body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::authz::Peer;
use crate::config::RetryPolicy;
use crate::endpoints::{Endpoint, EndpointSet};
use crate::listener::ListenerShared;
use crate::outlier::{self, Ejection};
use crate::route::{Route, Target, UpstreamBody, UpstreamClient};
use crate::stream_body::{RequestBody, RequestProgress, ResponseBody};
use conn_watch::{Activity, Verdict, WatchedIo};
use local_reply::{LocalReply, ProxyBody};

/// Serves one downstream connection until it closes, or until `shutdown`
/// resolves: then in-flight requests finish and the connection is closed
/// (`Connection: close` / GOAWAY). A connection that sends nothing at
/// first, or that goes idle, is closed by its watch.
pub async fn serve<S>(
    stream: S,
    peer: Arc<Peer>,
    shared: Arc<ListenerShared>,
    conn_route: Arc<Route>,
    shutdown: impl Future<Output = ()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = conn_route.timeouts.idle;
    let activity = Arc::new(Activity::default());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let in_service = activity.clone();
    let service = service_fn(move |req| {
        let route = current_route(&shared, &conn_route);
        let peer = peer.clone();
        let in_flight = in_service.request();
        async move {
            let resp = forward(route, &peer, req).await;
            drop(in_flight);
            Ok::<_, Infallible>(resp)
        }
    });
    let io = TokioIo::new(WatchedIo::new(stream, activity.clone()));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => finished(res),
        _ = shutdown => {
            conn.as_mut().graceful_shutdown();
            finished(conn.await);
        }
        verdict = conn_watch::watch(&activity, conn_watch::FIRST_REQUEST_TIMEOUT, idle) => match verdict {
            Verdict::Silent => tracing::warn!(
                waited = ?conn_watch::FIRST_REQUEST_TIMEOUT,
                "closing a connection that sent no HTTP request: the client seems to wait for the server to speak first (MySQL, SMTP, ...). A service speaking such a protocol must be tagged kuma.io/protocol: tcp"
            ),
            Verdict::Idle => {
                tracing::debug!(?idle, "closing an idle connection");
                conn.as_mut().graceful_shutdown();
                finished(conn.await);
            }
        },
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
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, LocalReply> {
    // An upgrade (WebSocket) or CONNECT becomes a tunnel once the upstream
    // agrees; HTTP/2 upstreams take neither.
    let h2 = route.protocol.upstream_h2();
    let mut downstream_upgrade =
        (!h2 && headers::is_upgrade(&req)).then(|| hyper::upgrade::on(&mut req));
    let upgrade = downstream_upgrade.is_some();
    let connect = req.method() == http::Method::CONNECT;
    let (mut parts, body) = req.into_parts();
    headers::set_forwarding(&mut parts.headers, matches!(peer, Peer::Mesh { .. }));
    // A request without a body can be sent again as it is; one with a body
    // streams through and is sent once. Failures where the endpoint may
    // have acted on the request (a reset, a gateway error, no answer) are
    // retried for idempotent methods only (RFC 9110 §9.2.2); a refused
    // connection saw nothing, whatever the method.
    let tries = match &route.target {
        Target::Balanced(_) if body.is_end_stream() && !upgrade => {
            1 + route.resilience.retry.num_retries
        }
        _ => 1,
    };
    let idempotent = parts.method.is_idempotent();
    let mut body = Some(body);
    let mut parts = Some(parts);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_failure = None;
    // The route timeout covers every try, from the end of the request: now
    // for a bodiless one (kept on the stack), else when its body has gone.
    let ended = RequestProgress::ended_now();
    let mut streamed: Option<Arc<RequestProgress>> = None;
    for attempt in 0..tries {
        if attempt > 0 {
            route.cluster.stats.rq_retry.inc();
            let wait = backoff(&route.resilience.retry, attempt);
            let until = match (ended.ended_at(), route.timeouts.request) {
                (Some(end), Some(limit)) => (end + limit).min(tokio::time::Instant::now() + wait),
                _ => tokio::time::Instant::now() + wait,
            };
            tokio::time::sleep_until(until).await;
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
            Some(b) if tries == 1 => {
                let progress = Arc::new(RequestProgress::default());
                streamed = Some(progress.clone());
                Either::Left(RequestBody::new(b, progress))
            }
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
            h2,
            upgrade,
        )
        .map_err(LocalReply::BadRequest)?;
        if route.mesh.is_some() {
            headers::set_client_cert(req.headers_mut(), peer);
        }
        // HTTP/2 requests keep the caller's `:authority`, CONNECT its
        // target: their URI cannot name the endpoint, so their client is
        // the endpoint's own. Upgrades need HTTP/1.1 end to end, which the
        // shared pool (HTTP/2 to a Koguma peer) cannot promise.
        let client = if h2 || connect || upgrade {
            route.cluster.pinned_client(endpoint.addr, h2)
        } else {
            route.cluster.h1.clone()
        };
        let exchange = Exchange {
            client: &client,
            progress: streamed.as_deref().unwrap_or(&ended),
            downstream_upgrade: downstream_upgrade.take(),
            connect,
        };
        let result = send(route, endpoint, set, req, exchange).await;
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

/// What one try needs besides the request.
struct Exchange<'a> {
    client: &'a UpstreamClient,
    progress: &'a RequestProgress,
    /// The downstream side of an upgrade the request asked for.
    downstream_upgrade: Option<OnUpgrade>,
    connect: bool,
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

/// Sends one try to `endpoint` and waits for its response (see
/// `wait_for_response`). A switch of protocols the upstream agrees to
/// becomes a tunnel between the two upgraded connections.
async fn send(
    route: &Route,
    endpoint: &Endpoint,
    set: Option<&EndpointSet>,
    req: Request<UpstreamBody>,
    exchange: Exchange<'_>,
) -> Result<Response<ProxyBody>, LocalReply> {
    let cluster = &route.cluster.stats;
    let addr = endpoint.addr;
    cluster.rq_total.inc();
    let started = Instant::now();
    let waited = wait_for_response(route, endpoint, set, req, &exchange).await;
    let now = outlier::now_ms();
    let result = match waited {
        Waited::Response(Ok(mut resp)) => {
            endpoint.health.answered(now);
            route.cluster.health.answered(now);
            if !is_gateway_error(resp.status()) {
                endpoint.health.succeeded(now);
            }
            let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS
                || (exchange.connect && resp.status().is_success());
            let tunnel = match exchange.downstream_upgrade {
                Some(down) if switched => {
                    let up = hyper::upgrade::on(&mut resp);
                    tokio::spawn(tunnel(down, up, addr, route.timeouts.stream_idle));
                    true
                }
                _ => false,
            };
            headers::strip_hop_by_hop(resp.headers_mut(), tunnel && !exchange.connect);
            let idle = route.timeouts.stream_idle;
            Ok(resp.map(|b| Either::Left(ResponseBody::new(b, idle))))
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
            tracing::warn!(upstream = %addr, timeout = ?route.timeouts.request, "upstream request timed out");
            Err(LocalReply::Timeout)
        }
        Waited::StreamIdle { request_ended } => {
            cluster.rq_timeout.inc();
            tracing::warn!(upstream = %addr, idle = ?route.timeouts.stream_idle, request_ended, "request stream idle: nothing moved");
            Err(if request_ended {
                LocalReply::Timeout
            } else {
                LocalReply::StreamIdle
            })
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

/// Carries bytes both ways between an upgraded downstream connection and
/// the upgraded upstream one, until both sides close or it goes idle.
async fn tunnel(down: OnUpgrade, up: OnUpgrade, addr: SocketAddr, idle: Duration) {
    let (down, up) = tokio::join!(down, up);
    let (down, up) = match (down, up) {
        (Ok(d), Ok(u)) => (d, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(upstream = %addr, error = %e, "upgrade did not complete");
            return;
        }
    };
    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
    // An upgraded stream is still a stream: its idle timeout applies.
    match crate::copy::bidirectional(&mut down, &mut up, Some(idle)).await {
        Ok((sent, received)) => {
            tracing::debug!(upstream = %addr, sent, received, "upgraded connection closed")
        }
        Err(e) => tracing::debug!(upstream = %addr, error = %e, "upgraded connection ended"),
    }
}

enum Waited {
    Response(Result<Response<Incoming>, hyper_util::client::legacy::Error>),
    Frozen,
    Deadline,
    StreamIdle { request_ended: bool },
}

/// Waits for the response headers. Envoy's route timeout starts when the
/// request has been sent whole, so an upload takes as long as it takes;
/// until then (and after, without a route timeout) the stream idle timeout
/// ends a request whose body stopped moving. When the endpoint is one of a
/// set, the wait also ends once the endpoint looks frozen (see
/// `OutlierDetection::stalled_after`).
async fn wait_for_response(
    route: &Route,
    endpoint: &Endpoint,
    set: Option<&EndpointSet>,
    req: Request<UpstreamBody>,
    exchange: &Exchange<'_>,
) -> Waited {
    let _in_flight = endpoint.health.start_request();
    let sent_at = outlier::now_ms();
    let outlier = &route.resilience.outlier;
    let timeouts = &route.timeouts;
    let progress = exchange.progress;
    // Checked a few times per stall period, and only by requests that wait.
    let check_every = outlier
        .stalled_after
        .filter(|_| set.is_some())
        .map(|d| d / 4);
    let response = exchange.client.request(req);
    tokio::pin!(response);
    loop {
        let now = tokio::time::Instant::now();
        let deadline = progress
            .ended_at()
            .and_then(|end| timeouts.request.map(|limit| end + limit));
        let quiet = Duration::from_millis(
            outlier::now_ms().saturating_sub(progress.last_moved_ms().max(sent_at)),
        );
        let idle_at = now + timeouts.stream_idle.saturating_sub(quiet);
        let mut wake = deadline.map_or(idle_at, |d| d.min(idle_at));
        if let Some(every) = check_every {
            wake = wake.min(now + every);
        }
        tokio::select! {
            r = &mut response => return Waited::Response(r),
            () = tokio::time::sleep_until(wake) => {}
            // The route timeout starts now: compute the deadline again.
            () = progress.wait_ended(), if progress.ended_at().is_none() => continue,
        }
        let now = tokio::time::Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Waited::Deadline;
        }
        if now >= idle_at {
            return Waited::StreamIdle {
                request_ended: progress.ended_at().is_some(),
            };
        }
        if check_every.is_none() {
            continue;
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
