//! The agent's side of the config stream: register, apply each config or
//! refuse it (ACK/NACK), and when the CP goes away keep serving on the last
//! config while reconnecting with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use koguma_forwarder::Forwarder;
use koguma_proto::v1::dataplane_discovery_client::DataplaneDiscoveryClient;
use koguma_proto::v1::{self as pb, ConfigRequest, ConfigResponse, ErrorDetail, Node};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::dns_proxy::DnsProxy;
use crate::identity::{CertInfo, WorkloadKeys};
use crate::renewal::RenewalClock;
use crate::state::AgentState;
use crate::translate;

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the control plane refused this dataplane: {0}")]
    Refused(String),
}

/// One instance of the control plane (a user may give several).
pub struct ControlPlane {
    pub address: String,
    pub channel: Channel,
}

pub struct ConfigStream {
    /// Dialled in turn: a lost or refused stream moves on to the next, so
    /// that an agent finds a live instance while its config stays in force.
    pub control_planes: Vec<ControlPlane>,
    pub current: usize,
    pub node: Node,
    pub forwarder: Arc<Forwarder>,
    pub state: Arc<AgentState>,
    /// Becomes true when the agent starts draining.
    pub leaving: watch::Receiver<bool>,
    pub keys: Arc<WorkloadKeys>,
    /// Presented on every stream (`authorization: Bearer`).
    pub token: Option<String>,
    pub dns: Arc<DnsProxy>,
    /// Whether the rules were checked to spare this process's own traffic.
    pub own_traffic_checked: AtomicBool,
    /// The whole config in force, that deltas apply to. Only this task
    /// touches it.
    pub in_force: std::sync::Mutex<Option<pb::ProxyConfig>>,
}

enum SessionEnd {
    Lost(String),
    Refused(tonic::Status),
}

/// Codes that retrying will not change: the resource or the request is wrong.
fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            // e.g. a global control plane, which serves no dataplanes
            | Code::FailedPrecondition
    )
}

impl ConfigStream {
    /// Runs until the CP refuses the dataplane before any config was applied
    /// (the agent cannot do anything useful then); otherwise forever.
    pub async fn run(mut self) -> Result<(), StreamError> {
        let mut backoff = MIN_BACKOFF;
        loop {
            let (end, got_config) = self.session().await;
            self.state.set_cp_connected(false);
            let cp = self.control_planes[self.current].address.clone();
            self.current = (self.current + 1) % self.control_planes.len();
            let next = &self.control_planes[self.current].address;
            match end {
                SessionEnd::Refused(status)
                    if is_permanent(status.code()) && self.state.applied().is_none() =>
                {
                    return Err(StreamError::Refused(status.message().to_string()));
                }
                SessionEnd::Refused(status) => {
                    tracing::error!(%cp, code = ?status.code(), reason = status.message(), %next, "control plane refused the stream; retrying");
                }
                SessionEnd::Lost(reason) if self.state.applied().is_some() => {
                    tracing::warn!(%cp, %reason, retry_in = ?backoff, %next, "control plane unreachable; serving on the last config");
                }
                SessionEnd::Lost(reason) => {
                    tracing::warn!(%cp, %reason, retry_in = ?backoff, %next, "control plane unreachable; waiting for a first config");
                }
            }
            if got_config {
                backoff = MIN_BACKOFF;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn request(&self, nonce: &str, error: Option<String>) -> ConfigRequest {
        ConfigRequest {
            node: None,
            version_info: self.state.applied_version().unwrap_or_default(),
            response_nonce: nonce.to_string(),
            error_detail: error.map(|message| ErrorDetail { message }),
            leaving: *self.leaving.borrow(),
            csr: Vec::new(),
        }
    }

    /// When to send the next CSR (see `RenewalClock`); far away without a
    /// certificate.
    fn renewal_due(&self, clock: &mut RenewalClock) -> tokio::time::Instant {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let Some(cert) = self.state.cert() else {
            return far;
        };
        let now = SystemTime::now();
        let due = clock.due(&cert, now);
        self.state.set_renew_at(due);
        let wait = due.duration_since(now).unwrap_or_default();
        tokio::time::Instant::now() + wait
    }

    async fn session(&mut self) -> (SessionEnd, bool) {
        let (tx, rx) = mpsc::channel(4);
        let mut first = self.request("", None);
        first.node = Some(self.node.clone());
        first.csr = self.keys.csr();
        let _ = tx.send(first).await;
        let channel = self.control_planes[self.current].channel.clone();
        let mut client = DataplaneDiscoveryClient::new(channel);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = &self.token {
            match MetadataValue::try_from(format!("Bearer {}", token.trim())) {
                Ok(v) => {
                    request.metadata_mut().insert("authorization", v);
                }
                Err(_) => {
                    return (
                        SessionEnd::Refused(tonic::Status::invalid_argument(
                            "the dataplane token contains characters that cannot be sent",
                        )),
                        false,
                    );
                }
            }
        }
        let mut responses = match client.stream_config(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return (classify(status), false),
        };
        let mut got_config = false;
        let mut last_nonce = String::new();
        let mut renewal_clock = RenewalClock::default();
        loop {
            let renewal = tokio::time::sleep_until(self.renewal_due(&mut renewal_clock));
            tokio::select! {
                _ = renewal => {
                    match self.keys.renew() {
                        Ok(csr) => {
                            tracing::info!("renewing the workload certificate: new key, CSR sent");
                            let mut req = self.request(&last_nonce, None);
                            req.csr = csr;
                            if tx.send(req).await.is_err() {
                                return (SessionEnd::Lost("stream closed".into()), got_config);
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "cannot renew the workload certificate"),
                    }
                    renewal_clock.sent(self.state.cert().as_deref(), SystemTime::now());
                }
                msg = responses.message() => match msg {
                    Ok(Some(resp)) => {
                        if !got_config {
                            tracing::info!(cp = %self.control_planes[self.current].address, "connected to the control plane");
                        }
                        got_config = true;
                        self.state.set_cp_connected(true);
                        let outcome = self.apply(&resp).await;
                        last_nonce = resp.nonce.clone();
                        if tx.send(self.request(&resp.nonce, outcome.err())).await.is_err() {
                            return (SessionEnd::Lost("stream closed".into()), got_config);
                        }
                    }
                    Ok(None) => return (SessionEnd::Lost("the control plane closed the stream".into()), got_config),
                    Err(status) => return (classify(status), got_config),
                },
                changed = self.leaving.changed() => {
                    if changed.is_ok() && *self.leaving.borrow() {
                        let _ = tx.send(self.request(&last_nonce, None)).await;
                    }
                }
            }
        }
    }

    /// The whole config a response stands for: as sent, or rebuilt from a
    /// delta over the config in force. Either way it must have the version
    /// the CP says, or the agent asks for the whole config (NACK).
    fn whole_config(&self, resp: &ConfigResponse) -> Result<pb::ProxyConfig, String> {
        let config = match (&resp.config, &resp.delta) {
            (Some(config), _) => config.clone(),
            (None, Some(delta)) => {
                let in_force = self.in_force.lock().unwrap_or_else(|p| p.into_inner());
                let applied = self.state.applied_version().unwrap_or_default();
                match in_force.as_ref() {
                    Some(base) if applied == delta.base_version => {
                        koguma_proto::apply_delta(base, delta)
                    }
                    _ => {
                        return Err(format!(
                            "a delta over version {:?}, but {applied:?} is in force: send the whole config",
                            delta.base_version
                        ));
                    }
                }
            }
            (None, None) => return Err("the response carries no config".into()),
        };
        let version = koguma_proto::version(&config);
        if version != resp.version_info {
            return Err(format!(
                "the config received has version {version}, not {}: send the whole config",
                resp.version_info
            ));
        }
        Ok(config)
    }

    /// Everything that can fail is checked (and the DNS server started)
    /// before the forwarder changes; DNS names change only once it has.
    async fn apply_config(&self, config: &pb::ProxyConfig) -> Result<(), String> {
        let records = DnsProxy::records(config)?;
        let forwarder_config = translate::proxy_config(config, &self.keys)?;
        if let Some(tp) = &config.transparent_proxy {
            self.dns.ensure_started(tp.ipv6).await?;
        }
        self.forwarder
            .apply(&forwarder_config)
            .map_err(|e| e.to_string())?;
        self.dns.set_records(records.as_deref().unwrap_or_default());
        if config.transparent_proxy.is_some()
            && !self.own_traffic_checked.swap(true, Ordering::Relaxed)
        {
            let (forwarder, state) = (self.forwarder.clone(), self.state.clone());
            tokio::spawn(async move {
                if forwarder.own_traffic_redirected().await {
                    state.set_problem("iptables redirects this process's own connections back to it: run koguma-dp as the UID the rules exclude (--kuma-dp-user, 5678 by default)".into());
                }
            });
        }
        Ok(())
    }

    /// Applies a response, or says why not; the config in force is kept then.
    async fn apply(&self, resp: &ConfigResponse) -> Result<(), String> {
        let version = &resp.version_info;
        if self.state.applied_version().as_deref() == Some(version.as_str()) {
            return Ok(()); // resync after a reconnect: nothing changed
        }
        let stats = self.forwarder.stats();
        let applied = match self.whole_config(resp) {
            Ok(config) => self.apply_config(&config).await.map(|()| config),
            Err(e) => Err(e),
        };
        let config = match applied {
            Ok(config) => config,
            Err(reason) => {
                stats.config_update_rejected.inc();
                tracing::warn!(%version, %reason, "config refused (NACK); keeping the config in force");
                return Err(reason);
            }
        };
        // A sidecar's certificate; a zone egress's, one per mesh: the one to
        // renew first (one CSR renews them all).
        let cert = config
            .mtls
            .as_ref()
            .and_then(|m| m.cert_chain.first())
            .and_then(|leaf| CertInfo::parse(leaf))
            .or_else(|| {
                config
                    .zone_proxy
                    .iter()
                    .flat_map(|z| &z.mesh_tls)
                    .filter_map(|m| m.tls.as_ref()?.cert_chain.first())
                    .filter_map(|leaf| CertInfo::parse(leaf))
                    .min_by_key(CertInfo::renew_at)
            });
        if let Some(c) = &cert
            && self.state.cert().is_none_or(|old| old.serial != c.serial)
        {
            tracing::info!(serial = %c.serial, identities = ?c.uris, "workload certificate in force");
        }
        self.state.set_cert(cert);
        stats.config_update_success.inc();
        self.state
            .set_applied(version.clone(), koguma_proto::json::proxy_config(&config));
        *self.in_force.lock().unwrap_or_else(|p| p.into_inner()) = Some(config);
        tracing::info!(%version, delta = resp.delta.is_some(), "config applied");
        Ok(())
    }
}

fn classify(status: tonic::Status) -> SessionEnd {
    match status.code() {
        Code::Unavailable
        | Code::Unknown
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Internal => SessionEnd::Lost(format!("{}: {}", status.code(), status.message())),
        _ => SessionEnd::Refused(status),
    }
}
