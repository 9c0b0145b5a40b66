//! MeshHTTPRoute on the request path: the rule a request meets, its
//! redirect or filters, its backend, and the mirrored copies.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};

use super::local_reply::{LocalReply, ProxyBody};
use super::{RequestContext, headers, upstream};
use crate::outlier;
use crate::route::{Route, Target};
use crate::routing;

/// Sends the request where the outbound's routes say: the first rule it
/// meets redirects it, or filters it and sends it to one of its weighted
/// backends; a request that meets none goes to the outbound's own cluster.
pub(super) async fn routed(
    route: &Route,
    ctx: &RequestContext<'_>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, LocalReply> {
    let Some(table) = &route.http_routes else {
        return upstream(route, ctx, req).await;
    };
    let Some(rule) = table.select(req.method(), req.uri(), req.headers()) else {
        return upstream(route, ctx, req).await;
    };
    let matched = &rule.matcher.path;
    if let Some(resp) = routing::redirect(&rule.filters, matched, &req) {
        let mut resp = resp.map(|()| Either::Right(Full::new(Bytes::new())));
        routing::apply_response(&rule.filters, resp.headers_mut());
        return Ok(resp);
    }
    routing::apply_request(&rule.filters, matched, &mut req);
    mirror(&rule.filters, &req);
    let target = match rule.backends.pick() {
        Some(routing::Backend::Route(r)) => r,
        Some(routing::Backend::Unresolved(why)) => {
            return Err(LocalReply::NoRoute(why.to_string()));
        }
        None => {
            return Err(LocalReply::NoRoute(
                "the matching route rule has no backend".into(),
            ));
        }
    };
    let mut result = upstream(target, ctx, req).await;
    if let Ok(resp) = &mut result {
        routing::apply_response(&rule.filters, resp.headers_mut());
    }
    result
}

/// Sends a copy of a bodiless request to each mirror of the rule (its
/// share of them), answer dropped. Requests with a body are not mirrored:
/// their body streams once, to the real backend.
fn mirror(filters: &[routing::Filter], req: &Request<Incoming>) {
    for f in filters {
        let routing::Filter::Mirror { route, percentage } = f else {
            continue;
        };
        if !req.body().is_end_stream()
            || (crate::endpoints::random() % 10_000) as f64 >= percentage * 100.0
        {
            continue;
        }
        let Target::Balanced(set) = &route.target else {
            continue;
        };
        let Some(endpoint) = set.pick(&[], outlier::now_ms()) else {
            continue;
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = http::Uri::try_from(format!("http://{}{path}", endpoint.authority)) else {
            continue;
        };
        let mut copy = Request::new(Either::Right(Full::new(Bytes::new())));
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = uri;
        *copy.headers_mut() = req.headers().clone();
        headers::strip_hop_by_hop(copy.headers_mut(), false);
        // Envoy's mark on mirrored requests: the host with `-shadow`.
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if let Ok(v) = http::HeaderValue::from_str(&format!("{host}-shadow")) {
            copy.headers_mut().insert(http::header::HOST, v);
        }
        let client = route.cluster.h1.clone();
        let limit = route.timeouts.request.unwrap_or(route.timeouts.stream_idle);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(limit, client.request(copy)).await;
        });
    }
}
