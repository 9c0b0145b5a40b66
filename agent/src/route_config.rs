//! An outbound's clusters and routes from the wire: each cluster it names
//! resolved into the forwarder's `ClusterConfig` (its endpoints and its
//! policies over the agent's defaults), and the MeshHTTPRoute and
//! MeshTCPRoute rules into typed matches and filters. Anything this agent
//! cannot run is refused naming the listener.

use std::collections::HashMap;

use koguma_forwarder as fwd;
use koguma_proto::v1 as pb;

use crate::cluster_policy;

/// What an outbound needs to resolve cluster names.
pub struct Clusters<'a> {
    pub by_name: HashMap<&'a str, &'a pb::Cluster>,
    pub timeouts: fwd::Timeouts,
    pub resilience: &'a fwd::Resilience,
}

impl Clusters<'_> {
    /// The cluster `name`, with its policies.
    pub fn resolve(&self, name: &str, listener: &str) -> Result<fwd::ClusterConfig, String> {
        let c = self
            .by_name
            .get(name)
            .ok_or_else(|| format!("{listener}: cluster {name:?} is not in the config"))?;
        let endpoints = crate::translate::endpoints(c, listener)?;
        let policy = cluster_policy::with_defaults(
            c.policy.as_ref(),
            self.timeouts,
            self.resilience,
            &format!("cluster {name:?}"),
        )?;
        let non_empty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        Ok(fwd::ClusterConfig {
            name: c.name.clone(),
            stats_name: non_empty(&c.stats_name).unwrap_or_else(|| c.name.clone()),
            endpoints,
            identity: non_empty(&c.identity),
            sni: non_empty(&c.sni),
            unavailable: non_empty(&c.unavailable),
            timeouts: policy.timeouts,
            resilience: policy.resilience,
            health_check: policy.health_check,
            load_balancer: policy.load_balancer,
        })
    }

    pub fn backends(
        &self,
        list: &[pb::WeightedCluster],
        listener: &str,
    ) -> Result<Vec<fwd::BackendConfig>, String> {
        list.iter()
            .map(|b| {
                if b.cluster.is_empty() {
                    return Ok(fwd::BackendConfig::Unresolved {
                        weight: b.weight,
                        why: b.unresolved.clone(),
                    });
                }
                Ok(fwd::BackendConfig::Cluster {
                    weight: b.weight,
                    cluster: Box::new(self.resolve(&b.cluster, listener)?),
                })
            })
            .collect()
    }

    pub fn http_routes(
        &self,
        rules: &[pb::HttpRouteRule],
        listener: &str,
    ) -> Result<Vec<fwd::HttpRouteConfig>, String> {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("{listener}, route {i}");
                Ok(fwd::HttpRouteConfig {
                    matcher: request_match(r.r#match.as_ref(), &at)?,
                    filters: r
                        .filters
                        .iter()
                        .filter_map(|f| f.filter.as_ref())
                        .map(|f| self.filter(f, &at))
                        .collect::<Result<_, _>>()?,
                    backends: self.backends(&r.backends, &at)?,
                })
            })
            .collect()
    }

    fn filter(&self, f: &pb::route_filter::Filter, at: &str) -> Result<fwd::FilterConfig, String> {
        use pb::route_filter::Filter;
        Ok(match f {
            Filter::RequestHeaders(m) => fwd::FilterConfig::RequestHeaders(modifier(m, at)?),
            Filter::ResponseHeaders(m) => fwd::FilterConfig::ResponseHeaders(modifier(m, at)?),
            Filter::Redirect(r) => fwd::FilterConfig::Redirect(fwd::RedirectConfig {
                scheme: Some(r.scheme.clone()).filter(|s| !s.is_empty()),
                hostname: Some(r.hostname.clone()).filter(|s| !s.is_empty()),
                path: path_rewrite(&r.full_path, &r.prefix),
                port: u16::try_from(r.port).ok().filter(|p| *p != 0),
                status: http::StatusCode::from_u16(if r.status == 0 {
                    302
                } else {
                    r.status as u16
                })
                .map_err(|_| format!("{at}: redirect status {} is not a status", r.status))?,
            }),
            Filter::Rewrite(r) => fwd::FilterConfig::Rewrite(fwd::RewriteConfig {
                hostname: Some(r.hostname.clone()).filter(|s| !s.is_empty()),
                path: path_rewrite(&r.full_path, &r.prefix),
            }),
            Filter::Mirror(m) => {
                if m.cluster.is_empty() {
                    return Err(format!("{at}: the mirror's backend is not resolved"));
                }
                fwd::FilterConfig::Mirror {
                    cluster: Box::new(self.resolve(&m.cluster, at)?),
                    percentage: m.percentage,
                }
            }
        })
    }
}

fn path_rewrite(full: &Option<String>, prefix: &Option<String>) -> Option<fwd::PathRewriteConfig> {
    match (full, prefix) {
        (Some(p), _) => Some(fwd::PathRewriteConfig::Full(p.clone())),
        (None, Some(p)) => Some(fwd::PathRewriteConfig::Prefix(p.clone())),
        _ => None,
    }
}

/// A header to send, checked; `at` names where it comes from.
pub fn header(
    h: &pb::HeaderValue,
    at: &str,
) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let name = http::HeaderName::from_bytes(h.name.as_bytes())
        .map_err(|_| format!("{at}: {:?} is not a header name", h.name))?;
    let value = http::HeaderValue::from_str(&h.value)
        .map_err(|_| format!("{at}: header {:?} has an invalid value", h.name))?;
    Ok((name, value))
}

fn modifier(m: &pb::HeaderModifier, at: &str) -> Result<fwd::HeaderModifierConfig, String> {
    let pairs = |list: &[pb::HeaderValue]| -> Result<Vec<_>, String> {
        list.iter().map(|h| header(h, at)).collect()
    };
    Ok(fwd::HeaderModifierConfig {
        set: pairs(&m.set)?,
        add: pairs(&m.add)?,
        remove: m
            .remove
            .iter()
            .map(|n| {
                http::HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| format!("{at}: {n:?} is not a header name"))
            })
            .collect::<Result<_, _>>()?,
    })
}

fn request_match(m: Option<&pb::RouteMatch>, at: &str) -> Result<fwd::RequestMatchConfig, String> {
    let Some(m) = m else {
        return Ok(fwd::RequestMatchConfig::default());
    };
    let regex =
        |v: &str| regex::Regex::new(v).map_err(|e| format!("{at}: regular expression {v:?}: {e}"));
    let path = match m.path_kind.as_str() {
        "" => fwd::PathMatchConfig::Any,
        "Exact" => fwd::PathMatchConfig::Exact(m.path.clone()),
        "PathPrefix" => fwd::PathMatchConfig::Prefix(m.path.clone()),
        "RegularExpression" => fwd::PathMatchConfig::Regex(regex(&m.path)?),
        k => {
            return Err(format!(
                "{at}: path match {k:?} is not supported by this agent"
            ));
        }
    };
    let method = if m.method.is_empty() {
        None
    } else {
        Some(
            http::Method::from_bytes(m.method.as_bytes())
                .map_err(|_| format!("{at}: {:?} is not a method", m.method))?,
        )
    };
    let headers = m
        .headers
        .iter()
        .map(|h| cluster_policy::header_matcher(h).map_err(|e| format!("{at}: {e}")))
        .collect::<Result<_, _>>()?;
    let query = m
        .query
        .iter()
        .map(|q| {
            Ok(fwd::QueryMatchConfig {
                name: q.name.clone(),
                value: match q.kind.as_str() {
                    "Exact" | "" => fwd::QueryValue::Exact(q.value.clone()),
                    "RegularExpression" => fwd::QueryValue::Regex(regex(&q.value)?),
                    k => {
                        return Err(format!(
                            "{at}: query match {k:?} is not supported by this agent"
                        ));
                    }
                },
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(fwd::RequestMatchConfig {
        path,
        method,
        headers,
        query,
    })
}
