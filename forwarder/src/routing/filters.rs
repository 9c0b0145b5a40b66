//! What a route rule does to a request besides choosing its backend:
//! header modifiers, URL rewrites, redirects (answered here) and request
//! mirroring (a copy sent elsewhere, its answer dropped).

use std::sync::Arc;

use http::header::{HOST, LOCATION};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};

use crate::config::{
    HeaderModifierConfig, PathMatchConfig, PathRewriteConfig, RedirectConfig, RewriteConfig,
};
use crate::route::Route;

pub enum Filter {
    RequestHeaders(HeaderModifierConfig),
    ResponseHeaders(HeaderModifierConfig),
    Redirect(RedirectConfig),
    Rewrite(RewriteConfig),
    /// A copy of bodiless requests goes to this backend too.
    Mirror {
        route: Arc<Route>,
        percentage: f64,
    },
}

impl HeaderModifierConfig {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// The path once `rewrite` replaced the matched part of it.
fn rewritten_path(path: &str, rewrite: &PathRewriteConfig, matched: &PathMatchConfig) -> String {
    match (rewrite, matched) {
        (PathRewriteConfig::Full(p), _) => p.clone(),
        (PathRewriteConfig::Prefix(new), PathMatchConfig::Prefix(old)) => {
            let rest = &path[old.trim_end_matches('/').len().min(path.len())..];
            let new = new.trim_end_matches('/');
            match (new.is_empty(), rest.is_empty()) {
                (true, true) => "/".to_string(),
                (true, false) => rest.to_string(),
                _ => format!("{new}{rest}"),
            }
        }
        (PathRewriteConfig::Prefix(new), _) => new.clone(),
    }
}

fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// Applies the request-side filters (header modifiers, rewrites) to `req`.
pub fn apply_request<B>(filters: &[Filter], matched: &PathMatchConfig, req: &mut Request<B>) {
    for f in filters {
        match f {
            Filter::RequestHeaders(m) => m.apply(req.headers_mut()),
            Filter::Rewrite(r) => {
                if let Some(p) = &r.path {
                    let path = rewritten_path(req.uri().path(), p, matched);
                    if let Some(uri) = with_path(req.uri(), &path) {
                        *req.uri_mut() = uri;
                    }
                }
                if let Some(host) = &r.hostname
                    && let Ok(v) = HeaderValue::from_str(host)
                {
                    req.headers_mut().insert(HOST, v);
                }
            }
            _ => {}
        }
    }
}

/// The redirect a rule answers with, if it has one.
pub fn redirect<B>(
    filters: &[Filter],
    matched: &PathMatchConfig,
    req: &Request<B>,
) -> Option<Response<()>> {
    let r = filters.iter().find_map(|f| match f {
        Filter::Redirect(r) => Some(r),
        _ => None,
    })?;
    let host_header = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or(req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let (host, port) = match host_header.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (host_header, None),
    };
    let scheme = r.scheme.as_deref().unwrap_or("http");
    let host = r.hostname.as_deref().unwrap_or(host);
    // Gateway API: a new scheme without a port means the scheme's own
    // port; otherwise the request's port stays.
    let port = r
        .port
        .map(|p| p.to_string())
        .or(port.filter(|_| r.scheme.is_none()).map(str::to_string));
    let path = match &r.path {
        Some(p) => rewritten_path(req.uri().path(), p, matched),
        None => req.uri().path().to_string(),
    };
    let default_port = matches!(
        (scheme, port.as_deref()),
        ("http", Some("80")) | ("https", Some("443"))
    );
    let mut location = format!("{scheme}://{host}");
    if let (Some(p), false) = (&port, default_port) {
        location.push(':');
        location.push_str(p);
    }
    location.push_str(&path);
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = Response::new(());
    *resp.status_mut() = r.status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Some(resp)
}

/// The response-side filters.
pub fn apply_response(filters: &[Filter], headers: &mut HeaderMap) {
    for f in filters {
        if let Filter::ResponseHeaders(m) = f {
            m.apply(headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn prefix_rewrites_replace_the_matched_segments() {
        let m = PathMatchConfig::Prefix("/v1".into());
        let p = |new: &str| PathRewriteConfig::Prefix(new.into());
        assert_eq!(rewritten_path("/v1/users", &p("/v2"), &m), "/v2/users");
        assert_eq!(rewritten_path("/v1", &p("/"), &m), "/");
        assert_eq!(rewritten_path("/v1/users", &p("/"), &m), "/users");
        assert_eq!(
            rewritten_path("/v1/x", &PathRewriteConfig::Full("/health".into()), &m),
            "/health"
        );
    }

    #[test]
    fn a_redirect_keeps_what_it_does_not_change() {
        let r = RedirectConfig {
            scheme: Some("https".into()),
            hostname: None,
            path: Some(PathRewriteConfig::Prefix("/new".into())),
            port: None,
            status: StatusCode::MOVED_PERMANENTLY,
        };
        let req = Request::get("/old/page?x=1")
            .header(HOST, "shop.mesh:8080")
            .body(())
            .unwrap();
        let resp = redirect(
            &[Filter::Redirect(r)],
            &PathMatchConfig::Prefix("/old".into()),
            &req,
        )
        .unwrap();
        assert_eq!(resp.status(), 301);
        assert_eq!(resp.headers()[LOCATION], "https://shop.mesh/new/page?x=1");
    }
}
