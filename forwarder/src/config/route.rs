//! Where an outbound's traffic goes, as routes say (MeshHTTPRoute,
//! MeshTCPRoute): named clusters, each with its own policies, and the
//! rules that pick between them.

use super::policy::{HeaderMatcher, HealthCheck, LoadBalancer, Resilience, Timeouts};

/// One upstream cluster as a config names it: its endpoints, its mesh
/// identity and the policies of the traffic sent to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Unique in the config; clusters of one name share connections.
    pub name: String,
    /// What its stats count under (envoy_cluster_name): its service.
    pub stats_name: String,
    pub endpoints: Vec<super::EndpointConfig>,
    /// With mesh mTLS: the exact URI SAN the upstream must present.
    pub identity: Option<String>,
    /// With mesh mTLS: the server name sent, which zone proxies route by.
    pub sni: Option<String>,
    /// Why there are no endpoints, when the mesh's config is the reason.
    pub unavailable: Option<String>,
    pub timeouts: Timeouts,
    pub resilience: Resilience,
    pub health_check: Option<HealthCheck>,
    pub load_balancer: LoadBalancer,
}

/// A share of traffic: a cluster, or one that could not be resolved (its
/// share is answered with a 500 naming why).
#[derive(Debug, Clone, PartialEq)]
pub enum BackendConfig {
    Cluster {
        weight: u32,
        cluster: Box<ClusterConfig>,
    },
    Unresolved {
        weight: u32,
        why: String,
    },
}

impl BackendConfig {
    pub fn weight(&self) -> u32 {
        match self {
            BackendConfig::Cluster { weight, .. } | BackendConfig::Unresolved { weight, .. } => {
                *weight
            }
        }
    }
}

/// One MeshHTTPRoute entry: a match, its filters, its backends.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRouteConfig {
    pub matcher: RequestMatchConfig,
    pub filters: Vec<FilterConfig>,
    pub backends: Vec<BackendConfig>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestMatchConfig {
    pub path: PathMatchConfig,
    pub method: Option<http::Method>,
    pub headers: Vec<HeaderMatcher>,
    pub query: Vec<QueryMatchConfig>,
}

#[derive(Debug, Clone, Default)]
pub enum PathMatchConfig {
    #[default]
    Any,
    Exact(String),
    /// Whole `/`-separated segments: `/api` takes `/api` and `/api/x`, not
    /// `/apix`.
    Prefix(String),
    Regex(regex::Regex),
}

impl PartialEq for PathMatchConfig {
    fn eq(&self, other: &Self) -> bool {
        use PathMatchConfig::*;
        match (self, other) {
            (Any, Any) => true,
            (Exact(a), Exact(b)) | (Prefix(a), Prefix(b)) => a == b,
            (Regex(a), Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct QueryMatchConfig {
    pub name: String,
    pub value: QueryValue,
}

#[derive(Debug, Clone)]
pub enum QueryValue {
    Exact(String),
    Regex(regex::Regex),
}

impl PartialEq for QueryMatchConfig {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && match (&self.value, &other.value) {
                (QueryValue::Exact(a), QueryValue::Exact(b)) => a == b,
                (QueryValue::Regex(a), QueryValue::Regex(b)) => a.as_str() == b.as_str(),
                _ => false,
            }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FilterConfig {
    RequestHeaders(HeaderModifierConfig),
    ResponseHeaders(HeaderModifierConfig),
    Redirect(RedirectConfig),
    Rewrite(RewriteConfig),
    Mirror {
        cluster: Box<ClusterConfig>,
        percentage: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderModifierConfig {
    pub set: Vec<(http::HeaderName, http::HeaderValue)>,
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    pub remove: Vec<http::HeaderName>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathRewriteConfig {
    Full(String),
    /// Replaces the prefix the rule matched.
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedirectConfig {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathRewriteConfig>,
    pub port: Option<u16>,
    pub status: http::StatusCode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RewriteConfig {
    pub hostname: Option<String>,
    pub path: Option<PathRewriteConfig>,
}
