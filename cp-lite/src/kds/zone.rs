//! The zone's end: dials the global, says who it is and what it holds,
//! then runs the shared sync loop. A lost connection is retried with
//! backoff while the zone keeps serving its dataplanes on what it has. A
//! refusal (no token, a bad one, another zone's) at the first connection
//! ends the zone CP, since retrying cannot fix it; a refusal later (its
//! token expired) must not take the zone's dataplanes' CP down: it is
//! logged as an error and retried, with the token file read again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use koguma_proto::channel;
use koguma_proto::v1::multizone_sync_client::MultizoneSyncClient;
use koguma_proto::v1::{KdsMessage, ZoneHello, kds_message::Msg};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::KdsError;
use super::LocalState;
use super::session::{Session, SyncStats};
use super::side::{Side, from_versions, to_versions};

#[derive(Clone)]
pub struct ZoneSyncConfig {
    pub zone: String,
    pub global_address: String,
    pub ca_file: Option<PathBuf>,
    pub skip_verify: bool,
    pub token_file: Option<PathBuf>,
    pub instance_id: String,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs for as long as the CP does; returns only when the global refuses
/// this zone.
pub async fn run(local: Arc<LocalState>, config: ZoneSyncConfig) -> Result<(), KdsError> {
    let address = channel::parse_address(&config.global_address, super::DEFAULT_PORT)
        .map_err(|e| KdsError::Setup(format!("--global-address: {e}")))?;
    let ch =
        channel::connect(&address, config.ca_file.as_deref(), config.skip_verify).map_err(|e| {
            KdsError::Setup(format!(
                "the channel to the global (--global-ca-file, --skip-verify): {e}"
            ))
        })?;
    let mut backoff = Duration::from_millis(200);
    let mut synced_once = false;
    loop {
        match once(&local, &config, ch.clone(), &mut synced_once).await {
            Err(KdsError::Refused(reason)) if !synced_once => {
                return Err(KdsError::Refused(reason));
            }
            Err(KdsError::Refused(reason)) => {
                tracing::error!(global = %config.global_address, %reason, retry_in = ?MAX_BACKOFF, "the global refuses this zone now; it keeps serving what it has. Renew the zone token (--zone-token-file is read at each attempt)");
                backoff = MAX_BACKOFF;
            }
            Ok(()) => {
                tracing::warn!(global = %config.global_address, "the global closed the sync stream; this zone keeps serving what it has and reconnects");
                backoff = Duration::from_millis(200);
            }
            Err(e) => {
                tracing::warn!(global = %config.global_address, error = %e, retry_in = ?backoff, "no sync with the global; this zone keeps serving what it has")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument
    )
}

async fn once(
    local: &Arc<LocalState>,
    config: &ZoneSyncConfig,
    ch: tonic::transport::Channel,
    synced_once: &mut bool,
) -> Result<(), KdsError> {
    let token = match &config.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| {
                KdsError::Setup(format!(
                    "cannot read --zone-token-file {}: {e}",
                    path.display()
                ))
            })?
            .trim()
            .to_string(),
        None => String::new(),
    };
    let side = Side::Zone;
    let catalog = local.resources.catalog();
    let have = to_versions(side.holds(&catalog, local).await);
    let hello = ZoneHello {
        zone: config.zone.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        instance_id: config.instance_id.clone(),
        have,
    };
    let (tx, rx) = mpsc::channel(16);
    tx.send(KdsMessage {
        msg: Some(Msg::Hello(hello)),
    })
    .await
    .map_err(|_| KdsError::Closed)?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if !token.is_empty() {
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| KdsError::Setup("the zone token is not a valid header value".into()))?;
        request.metadata_mut().insert("authorization", bearer);
    }
    let mut client = MultizoneSyncClient::new(ch).max_decoding_message_size(super::MAX_MESSAGE);
    let mut inbound = match client.sync(request).await {
        Ok(r) => r.into_inner(),
        Err(status) if refused(&status) => return Err(KdsError::Refused(status.message().into())),
        Err(status) => return Err(KdsError::Stream(status)),
    };
    let welcome = match inbound.message().await {
        Ok(Some(KdsMessage {
            msg: Some(Msg::Welcome(w)),
        })) => w,
        Ok(_) => {
            return Err(KdsError::Protocol(
                "the global did not answer with a welcome".into(),
            ));
        }
        Err(status) if refused(&status) => return Err(KdsError::Refused(status.message().into())),
        Err(status) => return Err(KdsError::Stream(status)),
    };
    tracing::info!(global = %config.global_address, global_instance = %welcome.global_instance_id, "connected to the global; syncing");
    *synced_once = true;
    let peer_has = from_versions(&welcome.have);
    let session = Session {
        side,
        local: local.clone(),
        stats: Arc::new(SyncStats::default()),
    };
    session.run(peer_has, inbound, tx).await
}
