//! The admin endpoints on 127.0.0.1:<admin port>: `/ready`, `/config_dump`,
//! `/metrics` (also at Envoy's `/stats/prometheus`).

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use koguma_forwarder::Stats;
use serde_json::json;
use tokio::net::TcpListener;

use crate::dns_proxy::DnsProxy;
use crate::state::AgentState;

pub struct AdminServer {
    pub state: Arc<AgentState>,
    pub stats: Arc<Stats>,
    pub dns: Arc<DnsProxy>,
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, max-age=0"),
    );
    resp
}

impl AdminServer {
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
        TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} for the admin API: {e} (set networking.admin.port or --admin-port)")
        })
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.handle(req)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "only GET is served here\n",
            );
        }
        match req.uri().path() {
            "/ready" => self.ready(),
            "/config_dump" => self.config_dump(),
            "/certs" => self.certs(),
            "/metrics" | "/stats/prometheus" => {
                reply(StatusCode::OK, "text/plain; version=0.0.4", self.metrics())
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /ready, /config_dump, /certs or /metrics\n",
            ),
        }
    }

    fn ready(&self) -> Response<Full<Bytes>> {
        if self.state.is_terminating() {
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "TERMINATING\n",
            )
        } else if self.state.applied().is_none() {
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "NOT_READY: no config from the control plane yet\n",
            )
        } else if let Some(problem) = self.state.problem() {
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("NOT_READY: {problem}\n"),
            )
        } else if let Some(names) = self.dns.entries() {
            // The DNS map comes with the config: applied means loaded.
            reply(
                StatusCode::OK,
                "text/plain",
                format!("READY (DNS: {names} names)\n"),
            )
        } else {
            reply(StatusCode::OK, "text/plain", "READY\n")
        }
    }

    fn config_dump(&self) -> Response<Full<Bytes>> {
        let applied = self.state.applied();
        let body = json!({
            "version": applied.as_ref().map(|a| a.version.clone()),
            "appliedAt": applied.as_ref().map(|a| humantime::format_rfc3339_millis(a.applied_at).to_string()),
            "controlPlaneConnected": self.state.cp_connected(),
            "config": applied.as_ref().map(|a| a.config.clone()),
        });
        reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec_pretty(&body).unwrap_or_default(),
        )
    }

    /// The workload certificate in force (never its key), as Envoy's /certs.
    fn certs(&self) -> Response<Full<Bytes>> {
        let time = |t| humantime::format_rfc3339_seconds(t).to_string();
        let body = match self.state.cert() {
            None => json!({"certificates": []}),
            Some(c) => json!({"certificates": [{
                "serialNumber": c.serial,
                "sha256": c.sha256,
                "subjectAltNames": c.uris,
                "validFrom": time(c.not_before),
                "expirationTime": time(c.not_after),
                "renewAt": time(self.state.renew_at().unwrap_or_else(|| c.renew_at())),
            }]}),
        };
        reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec_pretty(&body).unwrap_or_default(),
        )
    }

    fn metrics(&self) -> String {
        let mut out = self.stats.render();
        if self.dns.entries().is_some() {
            self.dns.stats.render(&mut out);
        }
        let live = if self.state.is_terminating() { 0 } else { 1 };
        let _ = writeln!(
            out,
            "# TYPE envoy_server_live gauge\nenvoy_server_live {live}"
        );
        let _ = writeln!(
            out,
            "# TYPE envoy_server_uptime gauge\nenvoy_server_uptime {}",
            self.state.started.elapsed().as_secs()
        );
        let _ = writeln!(
            out,
            "# TYPE envoy_control_plane_connected_state gauge\nenvoy_control_plane_connected_state {}",
            u8::from(self.state.cp_connected())
        );
        out
    }
}
