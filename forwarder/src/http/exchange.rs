//! One try of a request: sending it to an endpoint and waiting for the
//! response under the route's timeouts, the try's own deadline and the
//! stalled-endpoint check, and the tunnel an agreed upgrade becomes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::Either;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::headers;
use super::local_reply::{self, LocalReply, ProxyBody};
use crate::endpoints::{Endpoint, EndpointSet};
use crate::outlier::{self, Ejection};
use crate::route::{Route, UpstreamBody, UpstreamClient};
use crate::stream_body::{RequestProgress, ResponseBody};

/// What one try needs besides the request.
pub(super) struct Exchange<'a> {
    pub client: &'a UpstreamClient,
    pub progress: &'a RequestProgress,
    /// The downstream side of an upgrade the request asked for.
    pub downstream_upgrade: Option<OnUpgrade>,
    pub connect: bool,
    /// MeshRetry's `perTryTimeout`, when another try may follow.
    pub try_deadline: Option<tokio::time::Instant>,
    /// MeshTimeout's `maxStreamDuration`.
    pub stream_deadline: Option<tokio::time::Instant>,
}

/// Sends one try to `endpoint` and waits for its response (see
/// `wait_for_response`). A switch of protocols the upstream agrees to
/// becomes a tunnel between the two upgraded connections.
pub(super) async fn send(
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
            let deadline = exchange.stream_deadline;
            Ok(resp.map(|b| Either::Left(ResponseBody::new(b, idle).with_deadline(deadline))))
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
        Waited::TryDeadline => {
            cluster.rq_per_try_timeout.inc();
            tracing::warn!(upstream = %addr, timeout = ?route.resilience.retry.per_try_timeout, "upstream try timed out (per try timeout)");
            Err(LocalReply::PerTryTimeout)
        }
        Waited::StreamDeadline => {
            cluster.rq_timeout.inc();
            tracing::warn!(upstream = %addr, limit = ?route.timeouts.max_stream_duration, "upstream request reached its max stream duration");
            Err(LocalReply::MaxStreamDuration)
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
    /// MeshRetry's `perTryTimeout`.
    TryDeadline,
    /// MeshTimeout's `maxStreamDuration`.
    StreamDeadline,
    StreamIdle {
        request_ended: bool,
    },
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
        for limit in [exchange.try_deadline, exchange.stream_deadline]
            .into_iter()
            .flatten()
        {
            wake = wake.min(limit);
        }
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
        if exchange.stream_deadline.is_some_and(|d| now >= d) {
            return Waited::StreamDeadline;
        }
        if exchange.try_deadline.is_some_and(|d| now >= d) {
            return Waited::TryDeadline;
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
