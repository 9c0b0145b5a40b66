//! One dataplane's stream: send its config whenever it changes, and record
//! what the agent says of each response.

use std::sync::Arc;

use koguma_proto::v1::{ConfigRequest, ConfigResponse, TransparentProxy};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::DpServer;
use super::identity::SessionIdentity;
use crate::catalog::DataplaneKey;
use crate::proxy_config::{self, DataplaneView, Refresh};

pub async fn run(
    server: &Arc<DpServer>,
    key: &DataplaneKey,
    stream_id: u64,
    first_csr: Vec<u8>,
    node_tp: Option<TransparentProxy>,
    mut incoming: Streaming<ConfigRequest>,
    tx: mpsc::Sender<Result<ConfigResponse, Status>>,
) {
    let mut snapshots = server.snapshots.clone();
    let mut view = DataplaneView::new(&key.0, &key.1, node_tp);
    let mut sent_version: Option<String> = None;
    let mut nonce: u64 = 0;
    let mut identity = SessionIdentity::default();
    let mut new_csr = !first_csr.is_empty();
    if new_csr {
        identity.set_csr(first_csr);
    }
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let rebuilt = match view.refresh(&snapshot) {
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
            Refresh::Rebuilt => true,
        };
        if let Some(built) = view.config().filter(|_| rebuilt || new_csr) {
            new_csr = false;
            let mut config = built.clone();
            identity.fill(server, &snapshot.catalog, key, &mut config);
            let version = proxy_config::version(&config);
            if sent_version.as_deref() != Some(version.as_str()) {
                nonce += 1;
                let response = ConfigResponse {
                    version_info: version.clone(),
                    nonce: nonce.to_string(),
                    config: Some(config),
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
                tracing::debug!(mesh = %key.0, dataplane = %key.1, %version, "config sent");
                server.status.sent(key, stream_id, &version);
                sent_version = Some(version);
            }
        }
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return; // the CP is shutting down
                }
            }
            msg = incoming.message() => match msg {
                Ok(Some(mut req)) => {
                    let csr = std::mem::take(&mut req.csr);
                    if !csr.is_empty() {
                        tracing::debug!(mesh = %key.0, dataplane = %key.1, "certificate signing request received");
                        identity.set_csr(csr);
                        new_csr = true;
                    }
                    on_request(server, key, stream_id, nonce, sent_version.as_deref(), req)
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

fn on_request(
    server: &DpServer,
    key: &DataplaneKey,
    stream_id: u64,
    nonce: u64,
    sent: Option<&str>,
    req: ConfigRequest,
) {
    if req.leaving {
        tracing::info!(mesh = %key.0, dataplane = %key.1, "dataplane is draining: removing it from endpoints");
        server.resources.set_draining(key, true);
    }
    if req.response_nonce != nonce.to_string() {
        return; // answers an older response; the latest one is what counts
    }
    match req.error_detail {
        Some(err) => {
            let rejected = sent.unwrap_or_default();
            tracing::warn!(mesh = %key.0, dataplane = %key.1, version = rejected, reason = %err.message, "config rejected (NACK)");
            server
                .status
                .rejected(key, stream_id, rejected, &err.message);
        }
        None => {
            server.status.acked(key, stream_id, &req.version_info);
            if !req.leaving {
                // Its listeners are bound: peers may send it traffic now.
                server.resources.set_draining(key, false);
            }
        }
    }
}
