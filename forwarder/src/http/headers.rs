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

/// Removes the headers of one hop. With `upgrade`, the request or response
/// of a protocol upgrade keeps `Upgrade` and says `Connection: upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && *n == header::UPGRADE))
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        if !(upgrade && *name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // `te: trailers` is the one TE value HTTP/2 allows, and gRPC needs it.
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        headers.remove(header::TE);
    }
}

/// Whether an HTTP/1.1 request asks to switch protocols (`Connection:
/// upgrade` with an `Upgrade`, e.g. WebSocket) or to open a tunnel
/// (CONNECT).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    if req.version() != Version::HTTP_11 {
        return false;
    }
    req.method() == http::Method::CONNECT
        || (req.headers().contains_key(header::UPGRADE)
            && req
                .headers()
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What Envoy adds under Kuma, where sidecars are not edge proxies: an
/// `x-forwarded-proto` saying how the request reached the first proxy (kept
/// when present), and an `x-request-id` (a random UUID, kept when present)
/// that follows the request through every hop. `x-forwarded-for` is left
/// as the caller sent it.
pub fn set_forwarding(headers: &mut HeaderMap, downstream_tls: bool) {
    if !headers.contains_key(X_FORWARDED_PROTO) {
        let proto = if downstream_tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    ensure_request_id(headers);
}

/// Gives the request an `x-request-id` unless it has one: done as it
/// arrives, so that the access log and a mirror see the id the upstream
/// gets, as with Envoy.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if !headers.contains_key(X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, request_id());
    }
}

/// 128 random bits for a request id. An id names a request; it is no
/// secret, so a per-thread splitmix64 stream seeded once from the system's
/// generator does, at a few nanoseconds an id.
fn random_128() -> [u8; 16] {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            // Should the generator fail, ids are still unique per thread
            // and time.
            let _ = aws_lc_rs::rand::fill(&mut seed);
            u64::from_le_bytes(seed) ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    }
    let next = || {
        STATE.with(|s| {
            let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            s.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    };
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&next().to_le_bytes());
    b[8..].copy_from_slice(&next().to_le_bytes());
    b
}

/// A version 4 UUID, as Envoy's `x-request-id`.
fn request_id() -> HeaderValue {
    let mut b = random_128();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[usize::from(byte >> 4)];
        out[o + 1] = HEX[usize::from(byte & 0xf)];
        o += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0"))
}

pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Points the request at `endpoint` in the version the upstream speaks.
/// HTTP/1.1 keeps the client's Host, and its URI names the endpoint (the
/// pool key). HTTP/2 keeps the client's authority as `:authority` (from
/// its URI, else its Host), as do CONNECT's target and an upgrade's
/// headers: those go out on a client pinned to the endpoint. The path
/// moves over as it is.
pub fn to_upstream<B>(
    req: Request<B>,
    endpoint: &Authority,
    h2: bool,
    upgrade: bool,
) -> Result<Request<B>, String> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if parts.method == http::Method::CONNECT && !h2 {
        // Authority-form: the tunnel's target, as the client asked.
        parts.version = Version::HTTP_11;
        return Ok(Request::from_parts(parts, body));
    }
    let client_authority = parts.uri.authority().cloned().or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
    });
    let authority = if h2 {
        // HTTP/2 carries the authority in `:authority`; a Host header beside
        // it would have to match it.
        parts.headers.remove(header::HOST);
        client_authority.unwrap_or_else(|| endpoint.clone())
    } else {
        if !parts.headers.contains_key(header::HOST)
            && let Some(a) = &client_authority
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            parts.headers.insert(header::HOST, v);
        }
        endpoint.clone()
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority);
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
        let up = to_upstream(req, &authority, false, false).unwrap();
        assert_eq!(up.uri(), "http://127.0.0.9:8080/a?b=1");
        assert_eq!(up.headers()["host"], "backend.mesh");
        assert!(up.headers().get("x-hop").is_none());
        assert!(up.headers().get("connection").is_none());
        assert_eq!(up.headers()["te"], "trailers");
        assert_eq!(up.headers()["x-keep"], "1");
    }
}

#[cfg(test)]
mod forwarding_tests {
    use super::*;

    #[test]
    fn http2_keeps_the_callers_authority_http1_its_host() {
        let endpoint = Authority::from_static("127.0.0.9:8080");
        let req = Request::builder()
            .uri("/svc.Echo/Say")
            .header("host", "backend.mesh:80")
            .body(())
            .unwrap();
        let up = to_upstream(req, &endpoint, true, false).unwrap();
        assert_eq!(up.uri(), "http://backend.mesh:80/svc.Echo/Say");
        assert!(up.headers().get("host").is_none());
        let req = Request::builder()
            .uri("http://grpc.example:50051/x")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        let up = to_upstream(req, &endpoint, true, false).unwrap();
        assert_eq!(up.uri().authority().unwrap(), "grpc.example:50051");
        let req = Request::builder()
            .uri("/x")
            .header("host", "backend.mesh")
            .body(())
            .unwrap();
        let up = to_upstream(req, &endpoint, false, false).unwrap();
        assert_eq!(up.uri(), "http://127.0.0.9:8080/x");
        assert_eq!(up.headers()["host"], "backend.mesh");
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_header_and_connect_its_target() {
        let endpoint = Authority::from_static("127.0.0.9:8080");
        let req = Request::builder()
            .uri("/chat")
            .header("host", "chat.mesh")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        assert!(is_upgrade(&req));
        let up = to_upstream(req, &endpoint, false, true).unwrap();
        assert_eq!(up.headers()["upgrade"], "websocket");
        assert_eq!(up.headers()["connection"], "upgrade");
        assert_eq!(
            up.headers()["sec-websocket-key"],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        let req = Request::builder()
            .method("CONNECT")
            .uri("db.internal:5432")
            .body(())
            .unwrap();
        assert!(is_upgrade(&req));
        let up = to_upstream(req, &endpoint, false, true).unwrap();
        assert_eq!(up.uri(), "db.internal:5432");
        let plain = Request::builder().uri("/").body(()).unwrap();
        assert!(!is_upgrade(&plain));
    }

    #[test]
    fn forwarding_headers_are_added_once_and_kept() {
        let mut h = HeaderMap::new();
        set_forwarding(&mut h, false);
        assert_eq!(h["x-forwarded-proto"], "http");
        let id = h["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "{id}");
        set_forwarding(&mut h, true);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-request-id"], id.as_str());
        let mut other = HeaderMap::new();
        set_forwarding(&mut other, true);
        assert_eq!(other["x-forwarded-proto"], "https");
        assert_ne!(other["x-request-id"], id.as_str());
    }
}

/// The request body's declared length, when it declares one.
pub fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
