//! Whether a try is tried again, and after how long (MeshRetry as Envoy
//! applies it): the outcome against `retryOn`, the method, the retriable
//! headers, and the backoff (exponential with full jitter, or what a
//! rate-limited answer's reset headers say).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, Response};

use super::local_reply::{LocalReply, ProxyBody};
use crate::config::{ResetFormat, RetryPolicy};

/// 502, 503 and 504: a gateway error.
pub fn is_gateway_error(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// Whether `result`, the outcome of one try of a request with `method` and
/// `headers`, is worth another try under `policy`.
pub fn retriable(
    policy: &RetryPolicy,
    method: &Method,
    headers: &HeaderMap,
    result: &Result<Response<ProxyBody>, LocalReply>,
) -> bool {
    let on = &policy.retry_on;
    // Whether the endpoint may have acted on the request: anything but a
    // connection that was never made.
    let (wanted, acted) = match result {
        Err(LocalReply::ConnectFailed(_)) => (on.connect_failure, false),
        Err(LocalReply::Reset(_) | LocalReply::Stalled) => (on.reset || on.server_error, true),
        // Counted as a 504, as Envoy counts it.
        Err(LocalReply::PerTryTimeout) => (on.reset || on.server_error || on.gateway_error, true),
        Err(_) => (false, true),
        Ok(resp) => (retriable_response(policy, resp), true),
    };
    if !wanted {
        return false;
    }
    if !on.methods.is_empty() && !on.methods.contains(method) {
        return false;
    }
    if acted && on.idempotent_only && !method.is_idempotent() {
        return false;
    }
    policy.retriable_request_headers.is_empty()
        || policy
            .retriable_request_headers
            .iter()
            .any(|m| m.matches(headers))
}

fn retriable_response(policy: &RetryPolicy, resp: &Response<ProxyBody>) -> bool {
    let on = &policy.retry_on;
    let status = resp.status();
    let code = status.as_u16();
    let headers = resp.headers();
    (on.server_error && status.is_server_error())
        || (on.gateway_error && is_gateway_error(status))
        || (on.conflict && code == 409)
        || on.status_codes.contains(&code)
        || (on.rate_limited && headers.contains_key("x-envoy-ratelimited"))
        || (!on.grpc_statuses.is_empty()
            && headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse::<u8>().ok())
                .is_some_and(|s| on.grpc_statuses.contains(&s)))
        || policy
            .retriable_response_headers
            .iter()
            .any(|m| m.matches(headers))
}

/// The wait before retry `n` (from 1): what a rate-limited answer's reset
/// header asks for, when the policy reads one, else exponential from the
/// base interval, capped, with full jitter so that many callers do not
/// retry in step.
pub fn backoff(policy: &RetryPolicy, n: u32, last: Option<&HeaderMap>) -> Duration {
    if let (Some(rl), Some(headers)) = (&policy.rate_limited, last)
        && let Some(wait) = rl
            .reset_headers
            .iter()
            .find_map(|(name, format)| reset_after(headers.get(name)?, *format))
    {
        return wait.min(rl.max_interval);
    }
    let cap = policy
        .base_interval
        .saturating_mul(1 << (n - 1).min(16))
        .min(policy.max_interval);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    cap.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

fn reset_after(value: &http::HeaderValue, format: ResetFormat) -> Option<Duration> {
    let n: f64 = value.to_str().ok()?.trim().parse().ok()?;
    let secs = match format {
        ResetFormat::Seconds => n,
        ResetFormat::UnixTimestamp => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()?
                .as_secs_f64();
            n - now
        }
    };
    Duration::try_from_secs_f64(secs.max(0.0)).ok()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{Either, Full};

    use super::*;
    use crate::config::{HeaderMatchKind, HeaderMatcher, RateLimitedBackOff, RetryOn};

    fn resp(status: u16, headers: &[(&str, &str)]) -> Result<Response<ProxyBody>, LocalReply> {
        let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Ok(r)
    }

    fn policy(on: RetryOn) -> RetryPolicy {
        RetryPolicy {
            retry_on: on,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn the_default_retries_gateway_errors_of_idempotent_requests_and_refused_connections_of_all() {
        let p = RetryPolicy::default();
        let none = HeaderMap::new();
        assert!(retriable(&p, &Method::GET, &none, &resp(503, &[])));
        assert!(!retriable(&p, &Method::POST, &none, &resp(503, &[])));
        assert!(!retriable(&p, &Method::GET, &none, &resp(500, &[])));
        let refused = Err(LocalReply::ConnectFailed("refused".into()));
        assert!(retriable(&p, &Method::POST, &none, &refused));
    }

    #[test]
    fn a_policys_conditions_are_envoys() {
        let none = HeaderMap::new();
        let five = policy(RetryOn {
            server_error: true,
            ..RetryOn::none()
        });
        // Envoy retries what retryOn names, whatever the method.
        assert!(retriable(&five, &Method::POST, &none, &resp(500, &[])));
        assert!(!retriable(&five, &Method::GET, &none, &resp(404, &[])));
        let refused = Err(LocalReply::ConnectFailed("refused".into()));
        assert!(!retriable(&five, &Method::GET, &none, &refused));
        let codes = policy(RetryOn {
            status_codes: vec![418],
            methods: vec![Method::GET],
            ..RetryOn::none()
        });
        assert!(retriable(&codes, &Method::GET, &none, &resp(418, &[])));
        assert!(!retriable(&codes, &Method::PUT, &none, &resp(418, &[])));
        let grpc = policy(RetryOn {
            grpc_statuses: vec![14],
            ..RetryOn::none()
        });
        assert!(retriable(
            &grpc,
            &Method::POST,
            &none,
            &resp(200, &[("grpc-status", "14")])
        ));
        assert!(!retriable(
            &grpc,
            &Method::POST,
            &none,
            &resp(200, &[("grpc-status", "0")])
        ));
    }

    #[test]
    fn retriable_headers_widen_and_narrow() {
        let mut p = policy(RetryOn::none());
        p.retriable_response_headers = vec![HeaderMatcher {
            name: "x-try-again".parse().unwrap(),
            kind: HeaderMatchKind::Present,
        }];
        let none = HeaderMap::new();
        assert!(retriable(
            &p,
            &Method::GET,
            &none,
            &resp(200, &[("x-try-again", "1")])
        ));
        assert!(!retriable(&p, &Method::GET, &none, &resp(200, &[])));
        p.retriable_request_headers = vec![HeaderMatcher {
            name: "x-retry-me".parse().unwrap(),
            kind: HeaderMatchKind::Exact("yes".into()),
        }];
        assert!(!retriable(
            &p,
            &Method::GET,
            &none,
            &resp(200, &[("x-try-again", "1")])
        ));
        let mut asked = HeaderMap::new();
        asked.insert("x-retry-me", "yes".parse().unwrap());
        assert!(retriable(
            &p,
            &Method::GET,
            &asked,
            &resp(200, &[("x-try-again", "1")])
        ));
    }

    #[test]
    fn backoff_grows_is_capped_and_follows_reset_headers() {
        let p = RetryPolicy::default();
        for n in 1..10 {
            assert!(backoff(&p, n, None) <= Duration::from_millis(250));
        }
        let mut rl = p.clone();
        rl.rate_limited = Some(RateLimitedBackOff {
            reset_headers: vec![("retry-after".parse().unwrap(), ResetFormat::Seconds)],
            max_interval: Duration::from_secs(2),
        });
        let mut h = HeaderMap::new();
        h.insert("retry-after", "1".parse().unwrap());
        assert_eq!(backoff(&rl, 1, Some(&h)), Duration::from_secs(1));
        h.insert("retry-after", "60".parse().unwrap());
        assert_eq!(backoff(&rl, 1, Some(&h)), Duration::from_secs(2));
    }
}
