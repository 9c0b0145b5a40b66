//! Rewriting requests for the upstream hop.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    // `te: trailers` is the one TE value HTTP/2 allows, and gRPC needs it.
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        headers.remove(header::TE);
    }
}

pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Points the request at `authority` (the pool key) in the version the
/// upstream speaks. The client's Host (HTTP/1.1) is kept. The path moves
/// over as it is: no allocation for the rewrite.
pub fn to_upstream<B>(
    req: Request<B>,
    authority: &Authority,
    h2: bool,
) -> Result<Request<B>, String> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if h2 {
        // HTTP/2 carries the authority in `:authority`; a Host header beside
        // it would have to match, which it cannot once we rewrite the URI.
        parts.headers.remove(header::HOST);
    } else if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority.clone());
    uri.path_and_query
        .get_or_insert_with(|| PathAndQuery::from_static("/"));
    parts.uri =
        Uri::from_parts(uri).map_err(|e| format!("cannot forward the request target: {e}"))?;
    parts.version = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    Ok(Request::from_parts(parts, body))
}

const XFCC: &str = "x-forwarded-client-cert";

/// On a mesh inbound, the caller's verified identity replaces whatever
/// `x-forwarded-client-cert` the request carried (Envoy's SANITIZE_SET):
/// an application can trust it.
pub fn set_client_cert(headers: &mut HeaderMap, peer: &crate::authz::Peer) {
    headers.remove(XFCC);
    if let crate::authz::Peer::Mesh { xfcc: Some(v), .. } = peer {
        headers.insert(XFCC, v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let req = Request::builder()
            .uri("/a?b=1")
            .header("host", "backend.mesh")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("te", "trailers")
            .header("x-keep", "1")
            .body(())
            .unwrap();
        let authority = Authority::from_static("127.0.0.9:8080");
        let up = to_upstream(req, &authority, false).unwrap();
        assert_eq!(up.uri(), "http://127.0.0.9:8080/a?b=1");
        assert_eq!(up.headers()["host"], "backend.mesh");
        assert!(up.headers().get("x-hop").is_none());
        assert!(up.headers().get("connection").is_none());
        assert_eq!(up.headers()["te"], "trailers");
        assert_eq!(up.headers()["x-keep"], "1");
    }
}
