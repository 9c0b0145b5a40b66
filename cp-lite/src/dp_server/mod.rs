//! The dataplane server: one gRPC stream per dataplane, over TLS, with xDS
//! ADS semantics. It registers template dataplanes, pushes a new config
//! whenever the catalog changes what that dataplane should run, and records
//! ACKs and NACKs.

mod identity;
mod registration;
mod session;
pub mod status;
mod zone_proxy;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::Stream;
use koguma_proto::v1::dataplane_discovery_server::DataplaneDiscovery;
use koguma_proto::v1::{ConfigRequest, ConfigResponse, ProxyType};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use koguma_proto::v1::dataplane_discovery_server::DataplaneDiscoveryServer;
pub use registration::DpAuth;

use koguma_api::ResourceType;

use crate::mesh_ca::MeshCas;
use crate::proxy_config::{ConfigSnapshot, Interests};
use crate::resources::Resources;
use crate::store::Origin;
use status::StatusRegistry;

/// How long agent-registered dataplanes wait for their agents after a CP start.
const STARTUP_GRACE: Duration = Duration::from_secs(30);

pub struct DpServer {
    resources: Arc<Resources>,
    snapshots: watch::Receiver<Arc<ConfigSnapshot>>,
    interests: Arc<Interests>,
    status: Arc<StatusRegistry>,
    cas: Arc<MeshCas>,
    auth: DpAuth,
    next_stream: AtomicU64,
    /// How long an agent-registered dataplane outlives its stream (Kuma: 10 s).
    deregistration_delay: Duration,
    /// The streams of zone ingresses and egresses, keyed (kind, name).
    zone_proxies: StatusRegistry,
}

impl DpServer {
    pub fn new(
        resources: Arc<Resources>,
        snapshots: watch::Receiver<Arc<ConfigSnapshot>>,
        interests: Arc<Interests>,
        status: Arc<StatusRegistry>,
        cas: Arc<MeshCas>,
        auth: DpAuth,
        deregistration_delay: Duration,
    ) -> Arc<DpServer> {
        let server = Arc::new(DpServer {
            resources,
            snapshots,
            interests,
            status,
            cas,
            auth,
            next_stream: AtomicU64::new(1),
            deregistration_delay,
            zone_proxies: StatusRegistry::default(),
        });
        // Agent-registered dataplanes from before a restart go unless their
        // agent reconnects. Agents back off for a few seconds while the CP is
        // away, so they get longer than a dropped stream does.
        let grace = deregistration_delay.max(STARTUP_GRACE);
        let catalog = server.resources.catalog();
        for rtype in [
            ResourceType::Dataplane,
            ResourceType::ZoneIngress,
            ResourceType::ZoneEgress,
        ] {
            for stored in catalog.list(rtype, None) {
                if stored.origin == Origin::Agent {
                    let key = (
                        stored.resource.meta.mesh.clone(),
                        stored.resource.meta.name.clone(),
                    );
                    server.schedule_removal(rtype, key, grace);
                }
            }
        }
        server
    }

    fn schedule_deregistration(
        self: &Arc<Self>,
        key: crate::catalog::DataplaneKey,
        after: Duration,
    ) {
        self.schedule_removal(ResourceType::Dataplane, key, after);
    }

    /// Deletes the agent-registered resource `key` of `rtype` after
    /// `after`, unless its agent is back by then.
    fn schedule_removal(
        self: &Arc<Self>,
        rtype: ResourceType,
        key: crate::catalog::DataplaneKey,
        after: Duration,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let status = this.status_of(rtype);
            if !status.still_gone(&key) {
                return;
            }
            match this
                .resources
                .deregister(rtype, &key, this.resources.instance())
                .await
            {
                Ok(true) => {
                    tracing::info!(kind = rtype.kind(), mesh = %key.0, name = %key.1, "deregistered: its agent is gone");
                    status.forget(&key);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(mesh = %key.0, dataplane = %key.1, error = %e, "cannot deregister dataplane")
                }
            }
        });
    }
}

impl DpServer {
    fn status_of(&self, rtype: ResourceType) -> &StatusRegistry {
        match rtype {
            ResourceType::ZoneIngress | ResourceType::ZoneEgress => &self.zone_proxies,
            _ => &self.status,
        }
    }
}

/// Newtype so the service impl can hold an `Arc` (sessions outlive calls).
pub struct DpService(pub Arc<DpServer>);

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ConfigResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DataplaneDiscovery for DpService {
    type StreamConfigStream = ResponseStream;

    async fn stream_config(
        &self,
        request: Request<Streaming<ConfigRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let peer = request.remote_addr();
        let token = crate::tokens::bearer(request.metadata());
        let mut incoming = request.into_inner();
        let first = incoming.message().await?.ok_or_else(|| {
            Status::invalid_argument("the stream closed before its first request")
        })?;
        let node = first.node.clone().ok_or_else(|| {
            Status::invalid_argument("the first request of a stream must carry the node")
        })?;
        if node.proxy_type() != ProxyType::Sidecar {
            let stream =
                zone_proxy::start(&self.0, token.as_deref(), node, first, incoming, peer).await?;
            return Ok(Response::new(stream));
        }
        let (key, origin) = registration::register(&self.0.resources, self.0.auth, token.as_deref(), &node).await.inspect_err(|e| {
            tracing::warn!(mesh = %node.mesh, dataplane = %node.name, ?peer, reason = %e.message(), "dataplane refused");
        })?;
        let stream_id = self.0.next_stream.fetch_add(1, Ordering::Relaxed);
        tracing::info!(mesh = %key.0, dataplane = %key.1, ?peer, stream_id, "dataplane connected");
        let others = self
            .0
            .status
            .connected(&key, stream_id, &node.agent_version);
        // A fresh agent has bound nothing yet: it gets traffic once it has
        // ACKed its first config. One that reconnects with a config in force
        // is serving already and stays in its peers' endpoints. While
        // another stream of this dataplane is open, its agent serves: a
        // second agent does not take it out of rotation.
        let fresh = first.version_info.is_empty();
        if others > 0 {
            tracing::warn!(mesh = %key.0, dataplane = %key.1, ?peer, stream_id, open = others + 1, "a second stream for a dataplane that has one open: both are served; it stays registered while either is open");
        } else {
            self.0
                .resources
                .claim(ResourceType::Dataplane, &key, fresh)
                .await;
        }
        let (tx, rx) = mpsc::channel(4);
        let server = self.0.clone();
        tokio::spawn(async move {
            let node_tp = node.transparent_proxy;
            server.status.node_tp(&key, node_tp);
            session::run(&server, &key, stream_id, first.csr, node_tp, incoming, tx).await;
            server.status.disconnected(&key, stream_id);
            // An agent that ends its stream without saying it is leaving was
            // killed or cut off: its peers stop sending it traffic now, not
            // after the deregistration delay. It is back in rotation when it
            // reconnects with its config in force.
            // A reconnect racing this is put back by its first ACK.
            if server.status.still_gone(&key)
                && !server
                    .resources
                    .release(ResourceType::Dataplane, &key)
                    .await
            {
                tracing::info!(mesh = %key.0, dataplane = %key.1, stream_id, "dataplane disconnected here; another control-plane instance serves it now");
                server.status.forget(&key);
                return;
            }
            tracing::info!(mesh = %key.0, dataplane = %key.1, stream_id, "dataplane disconnected: out of its peers' endpoints until it is back");
            if origin == Origin::Agent {
                server.schedule_deregistration(key, server.deregistration_delay);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What a global CP serves on the dataplane port: a refusal that tells the
/// agent where to go instead.
pub struct GlobalRefusesDataplanes;

#[tonic::async_trait]
impl DataplaneDiscovery for GlobalRefusesDataplanes {
    type StreamConfigStream = ResponseStream;

    async fn stream_config(
        &self,
        request: Request<Streaming<ConfigRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        tracing::warn!(peer = ?request.remote_addr(), "a dataplane dialled the global control plane: refused");
        Err(Status::failed_precondition(
            "this is a global control plane: it serves no dataplanes. Point koguma-dp --cp-address at the control plane of the dataplane's zone",
        ))
    }
}
