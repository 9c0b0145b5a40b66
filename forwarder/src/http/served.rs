//! What a listener does to a request before routing it and to the
//! response on its way back: MeshRateLimit's answer, MeshFaultInjection's
//! delays, aborts and throttling, and the access log record, finished when
//! the response body ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};

use super::local_reply::{LocalReply, ProxyBody};
use crate::access_log::PendingLog;
use crate::fault::Throttle;
use crate::rate_limit::HttpRateLimit;
use crate::stats::ListenerStats;

/// The response body as the caller gets it: throttled by a fault, and
/// counted for the access log, when either applies.
pub struct ServedBody {
    inner: ProxyBody,
    throttle: Option<Box<Throttle>>,
    log: Option<Box<PendingLog>>,
}

impl ServedBody {
    pub fn new(inner: ProxyBody, bandwidth: Option<u64>, log: Option<PendingLog>) -> ServedBody {
        ServedBody {
            inner,
            throttle: bandwidth.map(|b| Box::new(Throttle::new(b))),
            log: log.map(Box::new),
        }
    }
}

impl Body for ServedBody {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.throttle {
            Some(t) => t.poll_frame(Pin::new(&mut this.inner), cx),
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        if let (Some(log), Poll::Ready(Some(Ok(frame)))) = (&mut this.log, &polled)
            && let Some(data) = frame.data_ref()
        {
            log.sent(data.len());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.throttle {
            Some(t) => t.is_end_stream(&self.inner),
            None => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.throttle {
            Some(t) => t.size_hint(&self.inner),
            None => self.inner.size_hint(),
        }
    }
}

/// Takes a token from the inbound's HTTP bucket; the answer to send
/// instead when there is none.
pub fn rate_limited(limit: &HttpRateLimit, stats: &ListenerStats) -> Option<Response<ProxyBody>> {
    if limit.bucket.try_take() {
        stats.http_rate_limit_ok.inc();
        return None;
    }
    stats.http_rate_limited.inc();
    let cfg = &limit.config;
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        b"local_rate_limited",
    ))));
    *resp.status_mut() = cfg.status;
    let headers = resp.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    for (name, value, append) in &cfg.headers {
        if *append {
            headers.append(name.clone(), value.clone());
        } else {
            headers.insert(name.clone(), value.clone());
        }
    }
    Some(resp)
}

/// Envoy's response flag and response code details for an outcome.
pub fn flags_of(result: &Result<Response<ProxyBody>, LocalReply>) -> (&'static str, &'static str) {
    match result {
        Ok(_) => ("-", "via_upstream"),
        Err(reply) => match reply {
            LocalReply::NoHealthyUpstream | LocalReply::Unavailable(_) => {
                ("UH", "no_healthy_upstream")
            }
            LocalReply::ConnectFailed(_) => ("UF", "upstream_reset_before_response_started"),
            LocalReply::Reset(_) | LocalReply::Stalled => {
                ("UR", "upstream_reset_before_response_started")
            }
            LocalReply::Timeout | LocalReply::PerTryTimeout => ("UT", "response_timeout"),
            LocalReply::MaxStreamDuration => ("UMSDR", "max_duration_timeout"),
            LocalReply::Overflow => ("UO", "overflow"),
            LocalReply::NoRoute(_) => ("NR", "route_not_found"),
            LocalReply::StreamIdle => ("SI", "stream_idle_timeout"),
            LocalReply::BodyUnreadable(_) | LocalReply::BadRequest(_) => ("DPE", "bad_request"),
            LocalReply::Forbidden(_) => ("-", "rbac_access_denied"),
            LocalReply::FaultAbort(_) => ("FI", "fault_filter_abort"),
        },
    }
}
