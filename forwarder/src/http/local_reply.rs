//! Responses the proxy makes itself when the upstream cannot answer: a clear
//! status and reason, never a hang. gRPC callers get a trailers-only reply
//! with a `grpc-status`, as Envoy does, so their clients see UNAVAILABLE.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::stream_body::ResponseBody;

pub type ProxyBody = Either<ResponseBody, Full<Bytes>>;

#[derive(Debug)]
pub enum LocalReply {
    NoHealthyUpstream,
    /// No endpoints, and the CP said why.
    Unavailable(std::sync::Arc<str>),
    ConnectFailed(String),
    Reset(String),
    /// The endpoint answered nothing while its peers did (outlier detection).
    Stalled,
    Timeout,
    /// One try took longer than MeshRetry's `perTryTimeout`.
    PerTryTimeout,
    /// MeshTimeout's `maxStreamDuration` passed before the response came.
    MaxStreamDuration,
    /// A MeshCircuitBreaker limit is reached.
    Overflow,
    /// A route sent the request nowhere: its backend is not resolved.
    NoRoute(String),
    /// The request body could not be read whole for a retry.
    BodyUnreadable(String),
    /// The request body stopped moving (stream idle timeout).
    StreamIdle,
    BadRequest(String),
    /// Denied by MeshTrafficPermission.
    Forbidden(String),
    /// MeshFaultInjection's abort.
    FaultAbort(StatusCode),
}

impl LocalReply {
    pub fn status(&self) -> StatusCode {
        match self {
            LocalReply::NoHealthyUpstream
            | LocalReply::Unavailable(_)
            | LocalReply::ConnectFailed(_)
            | LocalReply::Overflow => StatusCode::SERVICE_UNAVAILABLE,
            LocalReply::Reset(_) | LocalReply::Stalled => StatusCode::BAD_GATEWAY,
            LocalReply::Timeout | LocalReply::PerTryTimeout | LocalReply::MaxStreamDuration => {
                StatusCode::GATEWAY_TIMEOUT
            }
            LocalReply::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            LocalReply::NoRoute(_) => StatusCode::INTERNAL_SERVER_ERROR,
            LocalReply::StreamIdle => StatusCode::REQUEST_TIMEOUT,
            LocalReply::BadRequest(_) => StatusCode::BAD_REQUEST,
            LocalReply::Forbidden(_) => StatusCode::FORBIDDEN,
            LocalReply::FaultAbort(status) => *status,
        }
    }

    fn message(&self) -> String {
        match self {
            LocalReply::NoHealthyUpstream => "no healthy upstream".into(),
            LocalReply::Unavailable(why) => format!("no healthy upstream: {why}"),
            LocalReply::ConnectFailed(e) => format!("upstream connect error: {e}"),
            LocalReply::Reset(e) => format!("upstream reset before response: {e}"),
            LocalReply::Timeout => "upstream request timeout".into(),
            LocalReply::PerTryTimeout => "upstream per try timeout".into(),
            LocalReply::MaxStreamDuration => "upstream max stream duration reached".into(),
            LocalReply::Overflow => "upstream overflow: circuit breaker limit reached".into(),
            LocalReply::BodyUnreadable(e) => format!("request body: {e}"),
            LocalReply::NoRoute(why) => format!("no route backend: {why}"),
            LocalReply::StreamIdle => "stream timeout".into(),
            LocalReply::Stalled => {
                "upstream answered nothing while its peers did: taken out of rotation".into()
            }
            LocalReply::BadRequest(e) | LocalReply::Forbidden(e) => e.clone(),
            LocalReply::FaultAbort(_) => "fault filter abort".into(),
        }
    }

    fn grpc_status(&self) -> &'static str {
        match self {
            LocalReply::Timeout
            | LocalReply::StreamIdle
            | LocalReply::PerTryTimeout
            | LocalReply::MaxStreamDuration => "4", // DEADLINE_EXCEEDED
            LocalReply::BadRequest(_) => "13", // INTERNAL
            LocalReply::Forbidden(_) => "7",   // PERMISSION_DENIED
            _ => "14",                         // UNAVAILABLE
        }
    }

    pub fn into_response(self, grpc: bool) -> Response<ProxyBody> {
        let message = self.message();
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!(
            "{message}\n"
        )))));
        let headers = resp.headers_mut();
        headers.insert("x-koguma-local-reply", HeaderValue::from_static("true"));
        if matches!(self, LocalReply::Overflow) {
            headers.insert("x-envoy-overloaded", HeaderValue::from_static("true"));
        }
        if grpc {
            *resp.body_mut() = Either::Right(Full::new(Bytes::new()));
            let headers = resp.headers_mut();
            headers.insert("content-type", HeaderValue::from_static("application/grpc"));
            headers.insert("grpc-status", HeaderValue::from_static(self.grpc_status()));
            if let Ok(v) = HeaderValue::from_str(&message) {
                headers.insert("grpc-message", v);
            }
        } else {
            headers.insert("content-type", HeaderValue::from_static("text/plain"));
            *resp.status_mut() = self.status();
        }
        resp
    }
}

/// "client error (Connect): tcp connect error: Connection refused" rather
/// than just the outermost layer.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}
