//! One dataplane's stream: send its config whenever it changes (whole on a
//! new stream and after a NACKed delta, as a delta otherwise), and record
//! what the agent says of each response.

use std::sync::Arc;

use koguma_api::ResourceType;
use koguma_proto::ConfigDigest;
use koguma_proto::v1::{ConfigRequest, ConfigResponse, ProxyConfig, TransparentProxy};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::DpServer;
use super::identity::SessionIdentity;
use crate::catalog::DataplaneKey;
use crate::proxy_config::{DataplaneView, Refresh};

/// What the stream last sent.
#[derive(Default)]
struct Sent {
    /// The version and digest of the last config sent: the base of the
    /// next delta (the config itself is not kept).
    last: Option<(String, ConfigDigest)>,
    nonce: u64,
    was_delta: bool,
    /// The next response goes whole: the agent refused a delta.
    whole_next: bool,
}

impl Sent {
    fn version(&self) -> Option<&str> {
        self.last.as_ref().map(|(v, _)| v.as_str())
    }

    /// The response that brings the agent to `config`, of digest `digest`.
    fn response(&mut self, config: ProxyConfig, digest: ConfigDigest) -> ConfigResponse {
        self.nonce += 1;
        let delta = match (&self.last, self.whole_next) {
            (Some((base, old)), false) => Some(koguma_proto::diff(base, old, &config, &digest)),
            _ => None,
        };
        self.was_delta = delta.is_some();
        self.whole_next = false;
        let version = digest.version();
        let response = ConfigResponse {
            version_info: version.clone(),
            nonce: self.nonce.to_string(),
            config: delta.is_none().then_some(config),
            delta,
        };
        self.last = Some((version, digest));
        response
    }
}

pub async fn run(
    server: &Arc<DpServer>,
    key: &DataplaneKey,
    stream_id: u64,
    first_csr: Vec<u8>,
    node_tp: Option<TransparentProxy>,
    mut incoming: Streaming<ConfigRequest>,
    tx: mpsc::Sender<Result<ConfigResponse, Status>>,
) {
    let snapshots = server.snapshots.clone();
    let subscription = server.interests.subscribe(&key.0, &key.1);
    let mut view = DataplaneView::new(&key.0, &key.1, node_tp);
    let mut sent = Sent::default();
    let mut identity = SessionIdentity::default();
    let mut new_csr = !first_csr.is_empty();
    if new_csr {
        identity.set_csr(first_csr);
    }
    loop {
        let snapshot = snapshots.borrow().clone();
        let rebuilt = match view.refresh(&snapshot) {
            // Registered a moment ago (the agent's template), it is stored
            // but not in a published snapshot yet: the one that has it
            // wakes this stream, within a batching window.
            Refresh::Deleted if server.resources.is_stored(key) => false,
            Refresh::Deleted => {
                let _ = tx
                    .send(Err(Status::not_found(format!(
                        "Dataplane {:?} in mesh {:?} was deleted",
                        key.1, key.0
                    ))))
                    .await;
                return;
            }
            Refresh::Unchanged => false,
            Refresh::Rebuilt => {
                subscription.watch(view.watched());
                true
            }
        };
        if let Some(built) = view
            .config()
            .filter(|_| rebuilt || new_csr || sent.whole_next)
        {
            new_csr = false;
            let mut config = built.clone();
            identity
                .fill(server, &snapshot.catalog, key, &mut config)
                .await;
            let digest = view.digest(&config);
            let version = digest.version();
            if sent.whole_next || sent.version() != Some(version.as_str()) {
                let response = sent.response(config, digest);
                let delta = response.delta.is_some();
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
                tracing::debug!(mesh = %key.0, dataplane = %key.1, %version, delta, "config sent");
                server
                    .status
                    .sent(key, stream_id, &version, warnings(built));
            }
        }
        // A snapshot published while this stream was changing what it
        // watches may have woken it, or not: look at it now.
        if snapshots.borrow().seq != snapshot.seq {
            continue;
        }
        tokio::select! {
            () = subscription.notify.notified() => {}
            msg = incoming.message() => match msg {
                Ok(Some(mut req)) => {
                    let csr = std::mem::take(&mut req.csr);
                    if !csr.is_empty() {
                        tracing::debug!(mesh = %key.0, dataplane = %key.1, "certificate signing request received");
                        identity.set_csr(csr);
                        new_csr = true;
                    }
                    let nacked = on_request(server, key, stream_id, &sent, req).await;
                    // A refused delta may be one the agent could not apply
                    // to what it has: send the whole config, once. A refused
                    // whole config waits for the next change, as before.
                    if nacked && sent.was_delta {
                        sent.whole_next = true;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(mesh = %key.0, dataplane = %key.1, error = %e, "stream error");
                    return;
                }
            }
        }
    }
}

/// Why destinations of `config` cannot be reached, for its insight.
fn warnings(config: &ProxyConfig) -> Vec<String> {
    config
        .clusters
        .iter()
        .filter(|c| !c.unavailable.is_empty())
        .map(|c| format!("{}: {}", c.name, c.unavailable))
        .collect()
}

/// Records an ACK or NACK; returns whether the latest response was refused.
async fn on_request(
    server: &DpServer,
    key: &DataplaneKey,
    stream_id: u64,
    sent: &Sent,
    req: ConfigRequest,
) -> bool {
    if req.leaving {
        if server.status.others_open(key, stream_id) > 0 {
            // Another agent with this identity still serves it.
            tracing::info!(mesh = %key.0, dataplane = %key.1, stream_id, "one of the dataplane's streams is leaving; another is open: it stays in endpoints");
        } else {
            tracing::info!(mesh = %key.0, dataplane = %key.1, "dataplane is draining: removing it from endpoints");
            server
                .resources
                .set_draining(ResourceType::Dataplane, key, true)
                .await;
        }
    }
    if req.response_nonce != sent.nonce.to_string() {
        return false; // answers an older response; the latest one is what counts
    }
    match req.error_detail {
        Some(err) => {
            let rejected = sent.version().unwrap_or_default();
            tracing::warn!(mesh = %key.0, dataplane = %key.1, version = rejected, reason = %err.message, "config rejected (NACK)");
            server
                .status
                .rejected(key, stream_id, rejected, &err.message);
            true
        }
        None => {
            server.status.acked(key, stream_id, &req.version_info);
            if !req.leaving {
                // Its listeners are bound: peers may send it traffic now.
                server
                    .resources
                    .set_draining(ResourceType::Dataplane, key, false)
                    .await;
            }
            false
        }
    }
}
