//! L7: HTTP/1.1, HTTP/2 and gRPC through hyper. The downstream side speaks
//! whatever the client speaks (HTTP/1.1 or HTTP/2 with prior knowledge); the
//! upstream side speaks what the service's protocol says, over pooled
//! connections. Endpoints are picked per request from the listener's current
//! route, so endpoint changes reach keep-alive connections at once.

mod conn_watch;
mod exchange;
mod headers;
mod local_reply;
mod retry;
mod routed;
mod served;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::access_log::{Downstream, PendingLog, Received, UpstreamSlot};
use crate::authz::Peer;
use crate::endpoints::PickKey;
use crate::listener::ListenerShared;
use crate::outlier::{self, Outcome};
use crate::route::{Route, Target};
use crate::stream_body::{RequestBody, RequestProgress};
use conn_watch::{Activity, Verdict, WatchedIo};
use koguma_telemetry::metrics::Gauge;
use local_reply::{LocalReply, ProxyBody};
use served::ServedBody;

/// Serves one downstream connection until it closes, or until `shutdown`
/// resolves: then in-flight requests finish and the connection is closed
/// (`Connection: close` / GOAWAY). A connection that sends nothing at
/// first, or that goes idle, is closed by its watch.
pub async fn serve<S>(
    stream: S,
    peer: Arc<Peer>,
    client: Downstream,
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
            let resp = forward(route, &peer, client, req).await;
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

/// Who sent a request, and where its tries went.
pub(super) struct RequestContext<'a> {
    pub peer: &'a Peer,
    pub conn: Downstream,
    pub upstream: UpstreamSlot,
    /// The request body as the upstream path read it (the access log's
    /// `%BYTES_RECEIVED%`).
    pub received: std::sync::OnceLock<Received>,
}

async fn forward(
    route: Arc<Route>,
    peer: &Peer,
    client: Downstream,
    mut req: Request<Incoming>,
) -> Response<ServedBody> {
    let started = Instant::now();
    let listener = &route.listener_stats;
    listener.rq_total.inc();
    let grpc = headers::is_grpc(req.headers());
    headers::ensure_request_id(req.headers_mut());
    let traffic = &route.traffic;
    let mut log = traffic
        .log
        .as_ref()
        .map(|l| PendingLog::begin(l.clone(), &req, peer, client));
    let ctx = RequestContext {
        peer,
        conn: client,
        upstream: UpstreamSlot::default(),
        received: std::sync::OnceLock::new(),
    };
    let mut bandwidth = None;
    let mut delayed = false;
    let result = if !crate::inbound::authorize(&route, peer) {
        Err(LocalReply::Forbidden(format!(
            "RBAC: access denied: {} may not call {}",
            peer.identity(),
            route
                .mesh
                .as_ref()
                .map_or("", |m| m.tls.own_identity.as_str())
        )))
    } else if let Some(limited) = traffic
        .http_limit
        .as_ref()
        .and_then(|l| served::rate_limited(l, listener))
    {
        if let Some(l) = &mut log {
            l.respond(&limited, "RL", "local_rate_limited", None, None);
        }
        listener.rq_xx.record(limited.status().as_u16());
        listener.rq_time.observe(started.elapsed());
        return limited.map(|b| ServedBody::new(b, None, log));
    } else {
        let injected = match crate::fault::for_peer(&traffic.faults, peer) {
            Some(f) => crate::fault::inject(f, listener).await,
            None => crate::fault::Injected::Pass {
                delayed: false,
                bandwidth: None,
            },
        };
        match injected {
            crate::fault::Injected::Abort(status) => Err(LocalReply::FaultAbort(status)),
            crate::fault::Injected::Pass {
                delayed: d,
                bandwidth: b,
            } => {
                (delayed, bandwidth) = (d, b);
                routed::routed(&route, &ctx, req).await
            }
        }
    };
    let (mut flags, details) = served::flags_of(&result);
    if delayed && flags == "-" {
        flags = "DI";
    }
    let resp = match result {
        Ok(resp) => resp,
        Err(reply) => reply.into_response(grpc),
    };
    listener.rq_xx.record(resp.status().as_u16());
    listener.rq_time.observe(started.elapsed());
    if let Some(l) = &mut log {
        l.respond(
            &resp,
            flags,
            details,
            ctx.upstream.get(),
            ctx.received.get().cloned(),
        );
    }
    resp.map(|b| ServedBody::new(b, bandwidth, log))
}

/// Request bodies up to this size are read whole before the first try
/// when a retry may need them again; larger ones (and bodies of unknown
/// length) stream through once and are never replayed.
const REPLAY_LIMIT: u64 = 64 * 1024;

pub(super) async fn upstream(
    route: &Route,
    ctx: &RequestContext<'_>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, LocalReply> {
    let peer = ctx.peer;
    // An upgrade (WebSocket) or CONNECT becomes a tunnel once the upstream
    // agrees; HTTP/2 upstreams take neither.
    let h2 = route.protocol.upstream_h2();
    let mut downstream_upgrade =
        (!h2 && headers::is_upgrade(&req)).then(|| hyper::upgrade::on(&mut req));
    let upgrade = downstream_upgrade.is_some();
    let connect = req.method() == http::Method::CONNECT;
    let (mut parts, body) = req.into_parts();
    headers::set_forwarding(&mut parts.headers, matches!(peer, Peer::Mesh { .. }));
    let policy = &route.resilience;
    let stats = &route.cluster.stats;
    let Some(_active) = route.cluster.admit_request(&policy.limits) else {
        stats.rq_pending_overflow.inc();
        tracing::warn!(cluster = %stats.name, "circuit breaker: maxRequests in flight, request refused");
        return Err(LocalReply::Overflow);
    };
    let stream_deadline = route
        .timeouts
        .max_stream_duration
        .map(|d| tokio::time::Instant::now() + d);
    // A request is sent again only from a copy: a bodiless one, or one
    // whose small body was read whole first. Anything else streams through
    // once.
    let may_retry = matches!(route.target, Target::Balanced(_))
        && !upgrade
        && !connect
        && policy.retry.num_retries > 0;
    let mut replay: Option<Bytes> = None;
    let mut streaming = Some(body);
    if may_retry {
        if streaming.as_ref().is_some_and(|b| b.is_end_stream()) {
            replay = Some(Bytes::new());
        } else if headers::content_length(&parts.headers).is_some_and(|n| n <= REPLAY_LIMIT)
            && let Some(b) = streaming.take()
        {
            let whole = read_whole(b, route.timeouts.stream_idle).await?;
            let _ = ctx.received.set(Received::Whole(whole.len() as u64));
            replay = Some(whole);
        }
    }
    let tries = if replay.is_some() {
        1 + policy.retry.num_retries
    } else {
        1
    };
    let key = match &route.target {
        Target::Balanced(set) => set.key_for(&parts.headers, &parts.uri, ctx.conn.ip()),
        _ => PickKey::default(),
    };
    let mut parts = Some(parts);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_failure: Option<Result<Response<ProxyBody>, LocalReply>> = None;
    // The route timeout covers every try, from the end of the request: now
    // for a bodiless or read one (kept on the stack), else when its body
    // has gone.
    let ended = RequestProgress::ended_now();
    let mut streamed: Option<Arc<RequestProgress>> = None;
    let mut _retrying = None;
    for attempt in 0..tries {
        if attempt > 0 {
            if policy
                .limits
                .max_retries
                .is_some_and(|max| stats.rq_retry_active.get() >= i64::from(max))
            {
                stats.rq_retry_overflow.inc();
                break;
            }
            stats.rq_retry.inc();
            _retrying = Some(ActiveGuard::new(&stats.rq_retry_active));
            let last_headers = match &last_failure {
                Some(Ok(r)) => Some(r.headers()),
                _ => None,
            };
            let wait = retry::backoff(&policy.retry, attempt, last_headers);
            let until = match (ended.ended_at(), route.timeouts.request) {
                (Some(end), Some(limit)) => (end + limit).min(tokio::time::Instant::now() + wait),
                _ => tokio::time::Instant::now() + wait,
            };
            tokio::time::sleep_until(until).await;
        }
        let picked = match &route.target {
            Target::Local(endpoint) => Some((endpoint, None)),
            // Another endpoint when there is one; else the same again,
            // as Envoy retries without a host predicate.
            Target::Balanced(set) => {
                let now = outlier::now_ms();
                set.pick_for(&key, &tried, now)
                    .or_else(|| set.pick_for(&key, &[], now).filter(|_| attempt > 0))
                    .map(|e| (e, Some(set)))
            }
            Target::BySni(_) => None,
        };
        let Some((endpoint, set)) = picked else {
            if attempt > 0 {
                break; // every endpoint was tried
            }
            stats.no_healthy_upstream.inc();
            if let Some(why) = &route.unavailable {
                return Err(LocalReply::Unavailable(why.clone()));
            }
            return Err(LocalReply::NoHealthyUpstream);
        };
        ctx.upstream.set(endpoint.addr);
        let upstream_body = match (&replay, streaming.take()) {
            (Some(bytes), _) => Either::Right(Full::new(bytes.clone())),
            (None, Some(b)) => {
                let progress = Arc::new(RequestProgress::default());
                let _ = ctx.received.set(Received::Streaming(progress.clone()));
                streamed = Some(progress.clone());
                Either::Left(RequestBody::new(b, progress))
            }
            (None, None) => break,
        };
        // The head is cloned only when another attempt may need it.
        let last_try = attempt + 1 == tries;
        let head = if last_try {
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
        let try_deadline = policy
            .retry
            .per_try_timeout
            .filter(|_| tries > 1)
            .map(|d| tokio::time::Instant::now() + d);
        let exchange = exchange::Exchange {
            client: &client,
            progress: streamed.as_deref().unwrap_or(&ended),
            downstream_upgrade: downstream_upgrade.take(),
            connect,
            try_deadline,
            stream_deadline,
        };
        let result = exchange::send(route, endpoint, set, req, exchange).await;
        if let Some(set) = set
            && let Some(outcome) = outcome_of(&result)
        {
            route
                .cluster
                .record(endpoint, set, &policy.outlier, outcome);
        }
        // Before the last try `parts` still holds the request's head: what
        // decides whether this outcome is retried, with no copy of it.
        let again = !last_try
            && parts
                .as_ref()
                .is_some_and(|p| retry::retriable(&policy.retry, &p.method, &p.headers, &result));
        if !again {
            if attempt > 0 && result.as_ref().is_ok_and(|r| !r.status().is_server_error()) {
                stats.rq_retry_success.inc();
            }
            return result;
        }
        tracing::debug!(upstream = %endpoint.addr, "trying another endpoint");
        tried.push(endpoint.addr);
        last_failure = Some(result);
    }
    last_failure.unwrap_or(Err(LocalReply::NoHealthyUpstream))
}

/// What a try says of its endpoint, for outlier detection; `None` for
/// what is the caller's doing (a request body that stopped, a bad request).
fn outcome_of(result: &Result<Response<ProxyBody>, LocalReply>) -> Option<Outcome> {
    match result {
        Ok(r) => Some(Outcome::Response(r.status().as_u16())),
        Err(
            LocalReply::ConnectFailed(_)
            | LocalReply::Reset(_)
            | LocalReply::Stalled
            | LocalReply::Timeout
            | LocalReply::PerTryTimeout
            | LocalReply::MaxStreamDuration,
        ) => Some(Outcome::LocalFailure),
        Err(_) => None,
    }
}

/// Reads a small request body whole, so that a retry can send it again.
async fn read_whole(body: Incoming, idle: Duration) -> Result<Bytes, LocalReply> {
    use http_body_util::BodyExt;
    match tokio::time::timeout(idle, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(LocalReply::BodyUnreadable(e.to_string())),
        Err(_) => Err(LocalReply::StreamIdle),
    }
}

/// A gauge counted up while the guard lives.
struct ActiveGuard<'a>(&'a Gauge);

impl<'a> ActiveGuard<'a> {
    fn new(g: &'a Gauge) -> ActiveGuard<'a> {
        g.inc();
        ActiveGuard(g)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
