//! Who calls the REST API and what they may do, as Kuma decides it: a
//! caller on the CP's own host is an admin (`localhostIsAdmin`); anyone
//! else is the user their token names (`koguma-cp generate user-token`,
//! ES256), or anonymous. Anyone may read; changing resources takes a user
//! token; issuing tokens and certificates, and reading or changing
//! Secrets, takes an admin (a member of `mesh-system:admin`). Kuma lets anonymous callers write; Koguma does
//! not, since its API is the only way in.
//!
//! Requests whose Host header is neither an IP address, `localhost` nor a
//! name the operator allowed are refused: a web page whose own name
//! resolves to 127.0.0.1 (DNS rebinding) cannot use the browser to reach
//! an API on the user's machine.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::tokens::user::{self, ADMIN_GROUP};

#[derive(Clone, Debug)]
pub struct ApiAuth {
    /// Callers from a loopback address are admins (Kuma's default: true).
    pub localhost_is_admin: bool,
    /// Host names accepted in the Host header besides IP addresses and
    /// `localhost` (lower case, without port).
    pub allowed_hosts: Arc<[String]>,
}

impl Default for ApiAuth {
    fn default() -> Self {
        ApiAuth {
            localhost_is_admin: true,
            allowed_hosts: Arc::from([]),
        }
    }
}

/// Who made a request, for the handlers' logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Admin(String),
    User(String),
    Anonymous,
}

/// What a request needs.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    Anyone,
    User,
    Admin,
}

fn need(method: &Method, path: &str) -> Need {
    // Secrets are read and written by admins only (Kuma's default access).
    let secrets = path.split('/').any(|segment| segment == "secrets");
    if secrets {
        Need::Admin
    } else if method == Method::GET || method == Method::HEAD {
        Need::Anyone
    } else if path.starts_with("/tokens/") || path.ends_with("/workload-certificates") {
        Need::Admin
    } else {
        Need::User
    }
}

/// The Host header's host, lower case, without the port.
fn host_of(value: &str) -> String {
    let v = value.trim().to_ascii_lowercase();
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    match v.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
        _ => v,
    }
}

impl ApiAuth {
    fn host_allowed(&self, host: &str) -> bool {
        host.parse::<IpAddr>().is_ok()
            || host == "localhost"
            || self.allowed_hosts.iter().any(|h| h == host)
    }

    async fn caller(
        &self,
        state: &ApiState,
        peer: SocketAddr,
        bearer: Option<&str>,
    ) -> Result<Caller, ApiError> {
        if let Some(token) = bearer {
            let claims = user::verify(&state.resources, token).await.map_err(|e| {
                ApiError::Unauthenticated(format!("the user token is not valid: {e}"))
            })?;
            return Ok(if claims.groups.iter().any(|g| g == ADMIN_GROUP) {
                Caller::Admin(claims.name)
            } else {
                Caller::User(claims.name)
            });
        }
        if self.localhost_is_admin && peer.ip().to_canonical().is_loopback() {
            return Ok(Caller::Admin("mesh-system:admin (local)".into()));
        }
        Ok(Caller::Anonymous)
    }
}

pub async fn check(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let auth = &state.auth;
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let deny = |e: ApiError, why: &str| {
        tracing::info!(%peer, %method, %path, reason = why, "API request refused");
        e.into_response()
    };
    if let Some(host) = req.headers().get(header::HOST) {
        let host = host_of(host.to_str().unwrap_or_default());
        if !auth.host_allowed(&host) {
            return deny(
                ApiError::Forbidden(format!(
                    "Host {host:?} is not a name of this API (a page using DNS rebinding?): call it by IP address or localhost, or allow the name with koguma-cp run --api-allowed-host {host}"
                )),
                "host not allowed",
            );
        }
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::tokens::bearer_token);
    let caller = match auth.caller(&state, peer, bearer).await {
        Ok(c) => c,
        Err(e) => return deny(e, "bad user token"),
    };
    let allowed = match (need(&method, &path), &caller) {
        (Need::Anyone, _) | (_, Caller::Admin(_)) => Ok(()),
        (Need::User, Caller::User(_)) => Ok(()),
        (Need::User, Caller::Anonymous) => Err(ApiError::Unauthenticated(
            "changing resources needs a user token (koguma-cp generate user-token, run on the control plane's host; then --api-token-file)".into(),
        )),
        (Need::Admin, Caller::User(name)) => Err(ApiError::Forbidden(format!(
            "user {name:?} is not in group {ADMIN_GROUP}: issuing tokens and certificates is for admins"
        ))),
        (Need::Admin, Caller::Anonymous) => Err(ApiError::Unauthenticated(format!(
            "issuing tokens and certificates needs an admin: call from the control plane's host, or with a user token of group {ADMIN_GROUP}"
        ))),
    };
    if let Err(e) = allowed {
        return deny(e, "caller may not do this");
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_open_writes_need_a_user_and_credentials_an_admin() {
        assert_eq!(need(&Method::GET, "/meshes"), Need::Anyone);
        assert_eq!(need(&Method::PUT, "/meshes/default"), Need::User);
        assert_eq!(
            need(&Method::DELETE, "/meshes/default/dataplanes/a"),
            Need::User
        );
        assert_eq!(need(&Method::POST, "/tokens/dataplane"), Need::Admin);
        assert_eq!(need(&Method::POST, "/tokens/user"), Need::Admin);
        assert_eq!(
            need(&Method::POST, "/meshes/default/workload-certificates"),
            Need::Admin
        );
        // Secrets: admins only, reading included.
        assert_eq!(need(&Method::GET, "/meshes/default/secrets"), Need::Admin);
        assert_eq!(need(&Method::GET, "/secrets"), Need::Admin);
        assert_eq!(
            need(&Method::PUT, "/meshes/default/secrets/ca-key"),
            Need::Admin
        );
        assert_eq!(
            need(&Method::GET, "/meshes/secrets/dataplanes"),
            Need::Admin,
            "a mesh named secrets is held to the stricter rule"
        );
    }

    #[test]
    fn hosts_are_ip_addresses_localhost_or_allowed_names() {
        let auth = ApiAuth {
            allowed_hosts: Arc::from(["cp.example.com".to_string()]),
            ..ApiAuth::default()
        };
        for ok in [
            "127.0.0.1:5681",
            "[::1]:5681",
            "LOCALHOST:5681",
            "cp.example.com",
            "10.0.0.1",
        ] {
            assert!(auth.host_allowed(&host_of(ok)), "{ok}");
        }
        for bad in ["evil.example:5681", "127.0.0.1.nip.io", "localhost.evil"] {
            assert!(!auth.host_allowed(&host_of(bad)), "{bad}");
        }
    }
}
