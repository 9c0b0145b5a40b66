//! Active health checks (MeshHealthCheck): one task per endpoint of a
//! cluster that asks for them, checking it every interval over the
//! cluster's own connections (mesh mTLS included, so the check reaches the
//! application behind the peer sidecar as traffic does). An endpoint that
//! fails `unhealthy_threshold` checks in a row leaves the rotation; one
//! that passes `healthy_threshold` in a row comes back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::AbortHandle;

use crate::config::{EndpointConfig, HealthCheck, HealthCheckKind};
use crate::connector::ClusterConnector;
use crate::endpoints::fnv;
use crate::outlier::{EndpointHealth, HealthRegistry};
use crate::stats::ClusterStats;

/// The checks running for one cluster, and what they were started for.
#[derive(Default)]
pub struct HealthChecks {
    running: Mutex<Option<Running>>,
}

struct Running {
    cfg: HealthCheck,
    endpoints: Vec<SocketAddr>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl HealthChecks {
    /// Makes the running checks match `cfg` over `endpoints`: kept when
    /// neither changed, else started again (an endpoint's state goes back
    /// to healthy until it fails again). Must be called inside a runtime.
    pub fn update(
        &self,
        cfg: Option<&HealthCheck>,
        endpoints: &[EndpointConfig],
        connector: &ClusterConnector,
        registry: &HealthRegistry,
    ) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let addrs: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
        let same = match (&*running, cfg) {
            (Some(r), Some(c)) => r.cfg == *c && r.endpoints == addrs,
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        // Stopping a check drops its state (its guard puts the endpoint
        // back in rotation).
        *running = None;
        let Some(cfg) = cfg else { return };
        let tasks = addrs
            .iter()
            .map(|addr| {
                let check = EndpointCheck {
                    cfg: cfg.clone(),
                    addr: *addr,
                    connector: connector.pinned_to(*addr),
                    health: registry.of(*addr),
                    stats: connector.stats.clone(),
                };
                tokio::spawn(check.run()).abort_handle()
            })
            .collect();
        *running = Some(Running {
            cfg: cfg.clone(),
            endpoints: addrs,
            tasks,
        });
    }
}

struct EndpointCheck {
    cfg: HealthCheck,
    addr: SocketAddr,
    connector: ClusterConnector,
    health: Arc<EndpointHealth>,
    stats: Arc<ClusterStats>,
}

/// Puts the endpoint back in rotation when its checks stop.
struct Verdict<'a> {
    check: &'a EndpointCheck,
    failing: bool,
}

impl Verdict<'_> {
    fn set(&mut self, failing: bool) {
        if self.failing != failing {
            self.failing = failing;
            self.check.health.set_check_failing(failing);
            if failing {
                self.check.stats.hc_unhealthy.inc();
            } else {
                self.check.stats.hc_unhealthy.dec();
            }
        }
    }
}

impl Drop for Verdict<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

impl EndpointCheck {
    async fn run(self) {
        let cfg = &self.cfg;
        let mut verdict = Verdict {
            check: &self,
            failing: false,
        };
        let (mut passed, mut failed) = (0u32, 0u32);
        tokio::time::sleep(jitter(cfg.initial_jitter, self.addr, 0)).await;
        for round in 1u64.. {
            self.stats.hc_attempt.inc();
            let result = match tokio::time::timeout(cfg.timeout, self.check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", cfg.timeout)),
            };
            match result {
                Ok(()) => {
                    self.stats.hc_success.inc();
                    failed = 0;
                    passed += 1;
                    if verdict.failing && passed >= cfg.healthy_threshold {
                        tracing::info!(upstream = %self.addr, cluster = %self.stats.name, "health check passed: endpoint back in rotation");
                        verdict.set(false);
                    }
                }
                Err(why) => {
                    self.stats.hc_failure.inc();
                    passed = 0;
                    failed += 1;
                    if !verdict.failing && failed >= cfg.unhealthy_threshold {
                        tracing::warn!(upstream = %self.addr, cluster = %self.stats.name, reason = %why, "health check failed: endpoint taken out of rotation");
                        verdict.set(true);
                    } else if cfg.always_log_failures {
                        tracing::info!(upstream = %self.addr, reason = %why, "health check failed");
                    }
                }
            }
            let spread = cfg.interval_jitter + cfg.interval * cfg.interval_jitter_percent / 100;
            tokio::time::sleep(cfg.interval + jitter(spread, self.addr, round)).await;
        }
    }

    async fn check(&self) -> Result<(), String> {
        let mut stream = self
            .connector
            .connect(self.addr, self.cfg.timeout)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        match &self.cfg.kind {
            HealthCheckKind::Tcp { send, receive } => {
                if !send.is_empty() {
                    stream
                        .write_all(send)
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                }
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !receive.iter().all(|want| contains(&got, want)) {
                    let n = stream
                        .read(&mut buf)
                        .await
                        .map_err(|e| format!("receive: {e}"))?;
                    if n == 0 {
                        return Err("closed before the expected bytes came".into());
                    }
                    // Bounded: a check reads at most 64 KiB.
                    if got.len() + n > 64 * 1024 {
                        return Err("the expected bytes did not come".into());
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                Ok(())
            }
            HealthCheckKind::Http {
                path,
                headers,
                expected,
            } => {
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| format!("http: {e}"))?;
                tokio::spawn(conn);
                let mut req = http::Request::get(path.as_str())
                    .header(http::header::HOST, self.addr.to_string())
                    .header(http::header::USER_AGENT, "Envoy/HC")
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| format!("request: {e}"))?;
                for (name, value, append) in headers {
                    if *append {
                        req.headers_mut().append(name.clone(), value.clone());
                    } else {
                        req.headers_mut().insert(name.clone(), value.clone());
                    }
                }
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| format!("http: {e}"))?;
                let status = resp.status().as_u16();
                let ok = if expected.is_empty() {
                    (200..300).contains(&status)
                } else {
                    expected.contains(&status)
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!("status {status}"))
                }
            }
            HealthCheckKind::Grpc { service, authority } => {
                let (mut sender, conn) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(stream),
                )
                .await
                .map_err(|e| format!("http2: {e}"))?;
                tokio::spawn(conn);
                let authority = if authority.is_empty() {
                    self.addr.to_string()
                } else {
                    authority.clone()
                };
                // HealthCheckRequest { service = 1 }, in a gRPC frame.
                let mut msg = Vec::new();
                if !service.is_empty() {
                    msg.push(0x0a);
                    msg.push(service.len().min(127) as u8);
                    msg.extend_from_slice(&service.as_bytes()[..service.len().min(127)]);
                }
                let mut frame = vec![0u8];
                frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
                frame.extend_from_slice(&msg);
                let req =
                    http::Request::post(format!("http://{authority}/grpc.health.v1.Health/Check"))
                        .header(http::header::CONTENT_TYPE, "application/grpc")
                        .header("te", "trailers")
                        .body(Full::new(Bytes::from(frame)))
                        .map_err(|e| format!("request: {e}"))?;
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| format!("grpc: {e}"))?;
                let head_status = resp.headers().get("grpc-status").cloned();
                let collected = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("grpc: {e}"))?;
                let status = collected
                    .trailers()
                    .and_then(|t| t.get("grpc-status").cloned())
                    .or(head_status);
                if status.as_ref().is_some_and(|s| s != "0") {
                    return Err(format!("grpc-status {status:?}"));
                }
                // HealthCheckResponse { status = 1 (SERVING) }.
                let body = collected.to_bytes();
                if body.len() >= 7 && body[5..7] == [0x08, 0x01] {
                    Ok(())
                } else {
                    Err("not SERVING".into())
                }
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A spread-out wait in [0, max): endpoints and rounds differ, so that
/// checks of many endpoints do not go out in step.
fn jitter(max: Duration, addr: SocketAddr, round: u64) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let h = fnv(format!("{addr}/{round}").as_bytes());
    max.mul_f64((h % 1000) as f64 / 1000.0)
}
