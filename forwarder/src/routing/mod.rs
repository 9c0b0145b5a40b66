//! Routes in force on an outbound (MeshHTTPRoute, MeshTCPRoute): which
//! rule a request meets, and which of its weighted backends takes it. A
//! backend is a `Route` of its own (its cluster, endpoints and policies),
//! built with the config; picking one is a match walk over the outbound's
//! few rules and one random number.

mod filters;

use std::sync::Arc;

pub use filters::{Filter, apply_request, apply_response, redirect};

use crate::config::{PathMatchConfig, QueryValue, RequestMatchConfig};
use crate::endpoints::random;
use crate::route::Route;

/// A share of traffic's destination.
pub enum Backend {
    Route(Arc<Route>),
    /// Its service could not be resolved: answered 500 with why.
    Unresolved(Arc<str>),
}

/// Backends with weights; a pick is one random number and a short walk.
#[derive(Default)]
pub struct WeightedBackends {
    /// Cumulative weights, with the backend.
    entries: Vec<(u64, Backend)>,
    total: u64,
}

impl WeightedBackends {
    pub fn new(list: Vec<(u32, Backend)>) -> WeightedBackends {
        let mut total = 0u64;
        let entries = list
            .into_iter()
            .filter(|(w, _)| *w > 0)
            .map(|(w, b)| {
                total += u64::from(w);
                (total, b)
            })
            .collect();
        WeightedBackends { entries, total }
    }

    pub fn pick(&self) -> Option<&Backend> {
        if self.total == 0 {
            return None;
        }
        let r = random() % self.total;
        self.entries
            .iter()
            .find(|(upto, _)| r < *upto)
            .map(|(_, b)| b)
    }
}

pub struct RouteRule {
    pub matcher: RequestMatchConfig,
    pub filters: Vec<Filter>,
    pub backends: WeightedBackends,
}

/// An outbound's HTTP rules, in the order they are tried.
#[derive(Default)]
pub struct HttpRouteTable {
    pub rules: Vec<RouteRule>,
}

impl HttpRouteTable {
    /// The first rule the request meets; `None`: the outbound's own
    /// cluster takes it.
    pub fn select(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> Option<&RouteRule> {
        self.rules
            .iter()
            .find(|r| matches(&r.matcher, method, uri, headers))
    }
}

fn matches(
    m: &RequestMatchConfig,
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> bool {
    let path = uri.path();
    let path_ok = match &m.path {
        PathMatchConfig::Any => true,
        PathMatchConfig::Exact(p) => path == p,
        PathMatchConfig::Prefix(p) => prefix_matches(p, path),
        PathMatchConfig::Regex(re) => crate::config::full_match(re, path),
    };
    path_ok
        && m.method.as_ref().is_none_or(|want| want == method)
        && m.headers.iter().all(|h| h.matches(headers))
        && m.query.iter().all(|q| {
            query_value(uri, &q.name).is_some_and(|v| match &q.value {
                QueryValue::Exact(want) => v == want,
                QueryValue::Regex(re) => crate::config::full_match(re, v),
            })
        })
}

/// Gateway API's path prefix: whole segments only.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

fn query_value<'a>(uri: &'a http::Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeaderMatchKind, HeaderMatcher, QueryMatchConfig};

    fn check(m: &RequestMatchConfig, method: &str, uri: &str, headers: &[(&str, &str)]) -> bool {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        matches(m, &method.parse().unwrap(), &uri.parse().unwrap(), &h)
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn every_condition_of_a_match_must_hold() {
        let m = RequestMatchConfig {
            path: PathMatchConfig::Prefix("/api".into()),
            method: Some(http::Method::POST),
            headers: vec![HeaderMatcher {
                name: "x-version".parse().unwrap(),
                kind: HeaderMatchKind::Exact("2".into()),
            }],
            query: vec![QueryMatchConfig {
                name: "debug".into(),
                value: QueryValue::Regex(regex::Regex::new("on|yes").unwrap()),
            }],
        };
        assert!(check(&m, "POST", "/api/x?debug=yes", &[("x-version", "2")]));
        assert!(!check(&m, "GET", "/api/x?debug=yes", &[("x-version", "2")]));
        assert!(!check(
            &m,
            "POST",
            "/api/x?debug=yess",
            &[("x-version", "2")]
        ));
        assert!(!check(&m, "POST", "/api/x?debug=on", &[("x-version", "3")]));
        assert!(!check(&m, "POST", "/other?debug=on", &[("x-version", "2")]));
    }

    #[test]
    fn weights_shape_the_split() {
        let w = WeightedBackends::new(vec![
            (90, Backend::Unresolved("a".into())),
            (10, Backend::Unresolved("b".into())),
            (0, Backend::Unresolved("never".into())),
        ]);
        let mut a = 0;
        for _ in 0..10_000 {
            match w.pick() {
                Some(Backend::Unresolved(n)) if &**n == "a" => a += 1,
                Some(Backend::Unresolved(n)) => assert_ne!(&**n, "never"),
                _ => unreachable!(),
            }
        }
        assert!((8_700..9_300).contains(&a), "{a}");
    }
}
