//! The global's end: checks each zone's token before anything is synced,
//! records the zone (a `Zone` resource on first connect) and its insight,
//! then runs the shared sync loop for as long as the zone stays connected.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};
use koguma_api::{Resource, ResourceType, validate_name};
use koguma_proto::v1::multizone_sync_server::MultizoneSync;
use koguma_proto::v1::{GlobalWelcome, KdsMessage, kds_message::Msg};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use koguma_proto::v1::multizone_sync_server::MultizoneSyncServer;

use super::LocalState;
use super::insights::ZoneInsights;
use super::session::{Session, SyncStats};
use super::side::{Side, from_versions, to_versions};
use crate::store::Origin;
use crate::tokens;

pub struct GlobalSync {
    local: Arc<LocalState>,
    insights: Arc<ZoneInsights>,
    instance_id: String,
    next_stream: AtomicU64,
}

impl GlobalSync {
    pub fn new(
        local: Arc<LocalState>,
        insights: Arc<ZoneInsights>,
        instance_id: String,
    ) -> GlobalSync {
        GlobalSync {
            local,
            insights,
            instance_id,
            next_stream: AtomicU64::new(1),
        }
    }

    /// The zone's `Zone` resource, made when it first connects.
    async fn record_zone(&self, zone: &str) -> Result<(), Status> {
        if self
            .local
            .resources
            .catalog()
            .get(ResourceType::Zone, "", zone)
            .is_some()
        {
            return Ok(());
        }
        let r = Resource::from_value(serde_json::json!({"type": "Zone", "name": zone}))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.local
            .resources
            .upsert(r, Origin::Api)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(zone, "zone created: it connected for the first time");
        Ok(())
    }
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<KdsMessage, Status>> + Send>>;

fn refuse(zone: &str, peer: Option<std::net::SocketAddr>, status: Status) -> Status {
    tracing::warn!(zone, ?peer, reason = %status.message(), "zone refused");
    status
}

#[tonic::async_trait]
impl MultizoneSync for GlobalSync {
    type SyncStream = SyncStream;

    async fn sync(
        &self,
        request: Request<Streaming<KdsMessage>>,
    ) -> Result<Response<SyncStream>, Status> {
        let peer = request.remote_addr();
        let token = tokens::bearer(request.metadata());
        let mut inbound = request.into_inner();
        let first = inbound.message().await?;
        let Some(KdsMessage {
            msg: Some(Msg::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message of a sync stream must be the zone's hello",
            ));
        };
        let zone = hello.zone.clone();
        let mut errs = koguma_api::ValidationError::default();
        validate_name("zone", &zone, &mut errs);
        if !errs.is_empty() {
            return Err(refuse(
                &zone,
                peer,
                Status::invalid_argument(format!("zone name: {errs}")),
            ));
        }
        let Some(token) = token else {
            return Err(refuse(
                &zone,
                peer,
                Status::unauthenticated(
                    "no zone token was presented: start the zone CP with --zone-token-file, a token from `koguma-cp generate zone-token --zone NAME` run against the global",
                ),
            ));
        };
        tokens::zone::verify(&self.local.resources, &token, &zone, "cp")
            .await
            .map_err(|e| match e {
                tokens::TokenError::Store(s) => Status::internal(s.to_string()),
                e => refuse(
                    &zone,
                    peer,
                    Status::permission_denied(format!(
                        "zone {zone:?} is not allowed to connect: {e}"
                    )),
                ),
            })?;
        self.record_zone(&zone).await?;

        let side = Side::Global(zone.clone());
        let catalog = self.local.resources.catalog();
        let have = to_versions(side.holds(&catalog, &self.local).await);
        let peer_has = from_versions(&hello.have);
        let (tx, rx) = mpsc::channel(16);
        let welcome = GlobalWelcome {
            global_instance_id: self.instance_id.clone(),
            have,
        };
        tx.send(KdsMessage {
            msg: Some(Msg::Welcome(welcome)),
        })
        .await
        .map_err(|_| Status::unavailable("the stream closed"))?;
        let stream_id = format!(
            "{}-{}",
            self.instance_id,
            self.next_stream.fetch_add(1, Ordering::Relaxed)
        );
        let stats = Arc::new(SyncStats::default());
        self.insights.connected(
            &zone,
            &stream_id,
            &self.instance_id,
            &hello.instance_id,
            &hello.version,
            stats.clone(),
        );
        tracing::info!(zone, ?peer, zone_version = %hello.version, "zone connected");
        let session = Session {
            side,
            local: self.local.clone(),
            stats,
        };
        let insights = self.insights.clone();
        tokio::spawn(async move {
            match session.run(peer_has, inbound, tx).await {
                Ok(()) => tracing::info!(zone, "zone disconnected"),
                Err(e) => tracing::warn!(zone, error = %e, "zone disconnected"),
            }
            insights.disconnected(&zone, &stream_id);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}
