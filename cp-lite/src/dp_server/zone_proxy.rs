//! Streams of zone ingresses and egresses (`koguma-dp run --proxy-type
//! ingress|egress`). The agent presents a zone token (scope `ingress` or
//! `egress`, for this zone) and its ZoneIngress or ZoneEgress resource,
//! which is registered here as the agent's and removed when the agent has
//! been gone for the deregistration delay.
//!
//! A zone proxy's config spans every mesh, so it is computed again from
//! each new snapshot (`proxy_config::zone_proxy`) and sent whole when its
//! version changed: zone proxies are a handful per zone, and the config is
//! a route per service.

use std::net::SocketAddr;
use std::sync::Arc;

use koguma_api::{Resource, Spec};
use std::collections::BTreeMap;
use std::time::Duration;

use koguma_proto::v1::{ConfigRequest, ConfigResponse, Node, ProxyConfig, ProxyType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{DpAuth, DpServer, ResponseStream};
use crate::catalog::{Catalog, DataplaneKey};
use crate::proxy_config::{ZONE_EGRESS_SERVICE, ZoneProxyKind};
use crate::resources::ResourceError;
use crate::role::Role;
use crate::store::Origin;
use crate::tokens;

fn kind_of(node: &Node) -> ZoneProxyKind {
    match node.proxy_type() {
        ProxyType::Egress => ZoneProxyKind::Egress,
        ProxyType::Ingress | ProxyType::Sidecar => ZoneProxyKind::Ingress,
    }
}

fn scope(kind: ZoneProxyKind) -> &'static str {
    match kind {
        ZoneProxyKind::Ingress => "ingress",
        ZoneProxyKind::Egress => "egress",
    }
}

/// Checks the token, then registers the resource the agent sent. Nothing
/// is stored before the token passes.
async fn register(
    server: &DpServer,
    token: Option<&str>,
    node: &Node,
    kind: ZoneProxyKind,
) -> Result<String, Status> {
    let rtype = kind.resource_type();
    let value: serde_json::Value = serde_json::from_str(&node.zone_proxy_json).map_err(|e| {
        Status::invalid_argument(format!(
            "the {} resource is not valid JSON: {e}",
            rtype.kind()
        ))
    })?;
    let mut resource = Resource::from_value(value)
        .map_err(|e| Status::invalid_argument(format!("invalid {}: {e}", rtype.kind())))?;
    if resource.resource_type() != rtype {
        return Err(Status::invalid_argument(format!(
            "type: expected {} for --proxy-type {}, got {}",
            rtype.kind(),
            scope(kind),
            resource.resource_type().kind()
        )));
    }
    let name = resource.meta.name.clone();
    let resources = &server.resources;
    // Standalone, this CP is zone "default" (Kuma's default zone name).
    let zone = resources
        .role()
        .zone_name()
        .unwrap_or("default")
        .to_string();
    if server.auth == DpAuth::DpToken {
        let result = match token {
            Some(t) => tokens::zone::verify(resources, t, &zone, scope(kind)).await,
            None => Err(tokens::TokenError::Missing(
                "no zone token was presented: run koguma-dp with --dataplane-token-file <a zone token>",
            )),
        };
        if let Err(e) = result {
            return Err(match e {
                tokens::TokenError::Store(s) => Status::internal(s.to_string()),
                e => Status::permission_denied(format!(
                    "{} {name:?} is not allowed to register: {e}",
                    rtype.kind()
                )),
            });
        }
    }
    let catalog = resources.catalog();
    if let Some(existing) = catalog.get(rtype, "", &name) {
        if existing.origin == Origin::Kds {
            return Err(Status::already_exists(format!(
                "{} {name:?} belongs to another zone: give this one another name",
                rtype.kind()
            )));
        }
        // What this zone computed stays until it computes it again, so
        // that other zones see no gap when the ingress reconnects.
        if let (Some(old), Spec::ZoneIngress(new)) =
            (existing.resource.as_zone_ingress(), &mut resource.spec)
        {
            new.available_services = old.available_services.clone();
        }
    }
    drop(catalog);
    match resources.upsert(resource, Origin::Agent).await {
        Ok(_) => Ok(name),
        Err(ResourceError::Invalid(e)) => Err(Status::invalid_argument(format!(
            "invalid {}: {e}",
            rtype.kind()
        ))),
        Err(e) => Err(Status::internal(e.to_string())),
    }
}

pub async fn start(
    server: &Arc<DpServer>,
    token: Option<&str>,
    node: Node,
    first: ConfigRequest,
    incoming: Streaming<ConfigRequest>,
    peer: Option<SocketAddr>,
) -> Result<ResponseStream, Status> {
    let kind = kind_of(&node);
    let rtype = kind.resource_type();
    if *server.resources.role() == Role::Global {
        return Err(Status::failed_precondition(
            "this is a global control plane: zone proxies connect to their zone's control plane",
        ));
    }
    let name = register(server, token, &node, kind)
        .await
        .inspect_err(|e| {
            tracing::warn!(kind = rtype.kind(), ?peer, reason = %e.message(), "zone proxy refused");
        })?;
    let key: DataplaneKey = (String::new(), name);
    // A new agent under this name serves again.
    server.resources.claim(rtype, &key, false).await;
    let stream_id = server
        .next_stream
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(kind = rtype.kind(), name = %key.1, ?peer, stream_id, "zone proxy connected");
    server
        .zone_proxies
        .connected(&key, stream_id, &node.agent_version);
    let (tx, rx) = mpsc::channel(4);
    let server = server.clone();
    tokio::spawn(async move {
        run(&server, kind, &key, stream_id, first, incoming, tx).await;
        server.zone_proxies.disconnected(&key, stream_id);
        tracing::info!(kind = rtype.kind(), name = %key.1, stream_id, "zone proxy disconnected");
        // An ingress killed without draining: other zones stop routing to
        // it now, as when it drains, not after the deregistration delay.
        if kind == ZoneProxyKind::Ingress && server.zone_proxies.still_gone(&key) {
            server.resources.release(rtype, &key).await;
        }
        server.schedule_removal(rtype, key, server.deregistration_delay);
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// What a certificate was issued from: the CSR, the CA, the lifetime.
#[derive(PartialEq)]
struct IssuedFrom {
    csr: Vec<u8>,
    ca_der: Vec<u8>,
    lifetime: Duration,
}

/// The certificates a zone egress presents, one per mesh where it
/// terminates mesh mTLS, issued over the agent's latest CSR.
#[derive(Default)]
struct EgressIdentities {
    csr: Option<Vec<u8>>,
    /// mesh → the certificate and what it was issued from.
    issued: BTreeMap<String, (IssuedFrom, Vec<u8>)>,
}

impl EgressIdentities {
    async fn fill(
        &mut self,
        server: &DpServer,
        catalog: &Catalog,
        name: &str,
        config: &mut ProxyConfig,
    ) {
        let Some(zp) = config.zone_proxy.as_mut() else {
            return;
        };
        for entry in &mut zp.mesh_tls {
            let mesh = entry.mesh.as_str();
            let Some(tls) = entry.tls.as_mut() else {
                continue;
            };
            let Some(backend) = catalog.mesh(mesh).and_then(|m| m.mtls_backend()) else {
                continue;
            };
            let ca = match server.cas.get(mesh, backend).await {
                Ok(ca) => ca,
                Err(e) => {
                    tracing::error!(%mesh, zone_egress = %name, error = %e, "no mesh CA: the egress gets no certificate for this mesh");
                    continue;
                }
            };
            tls.ca_certs = vec![ca.cert_der.clone()];
            let Some(csr) = &self.csr else {
                continue;
            };
            let inputs = IssuedFrom {
                csr: csr.clone(),
                ca_der: ca.cert_der.clone(),
                lifetime: backend.dp_cert_lifetime(),
            };
            let current = self.issued.get(mesh).filter(|(i, _)| *i == inputs);
            let cert = match current {
                Some((_, cert)) => cert.clone(),
                None => {
                    let uris = [format!("spiffe://{mesh}/{ZONE_EGRESS_SERVICE}")];
                    match ca.issue(csr, &uris, inputs.lifetime) {
                        Ok(issued) => {
                            tracing::info!(%mesh, zone_egress = %name, not_after = %issued.not_after, "zone egress certificate issued");
                            self.issued
                                .insert(mesh.to_string(), (inputs, issued.cert_der.clone()));
                            issued.cert_der
                        }
                        Err(e) => {
                            tracing::error!(%mesh, zone_egress = %name, error = %e, "cannot issue the zone egress certificate");
                            continue;
                        }
                    }
                }
            };
            tls.cert_chain = vec![cert];
        }
    }
}

async fn run(
    server: &DpServer,
    kind: ZoneProxyKind,
    key: &DataplaneKey,
    stream_id: u64,
    first: ConfigRequest,
    mut incoming: Streaming<ConfigRequest>,
    tx: mpsc::Sender<Result<ConfigResponse, Status>>,
) {
    let mut snapshots = server.snapshots.clone();
    let status = &server.zone_proxies;
    let mut sent: Option<String> = None;
    let mut nonce: u64 = 0;
    let mut identities = EgressIdentities::default();
    if !first.csr.is_empty() {
        identities.csr = Some(first.csr);
    }
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        match snapshot.compute_zone_proxy(kind, &key.1) {
            Some(mut config) => {
                identities
                    .fill(server, &snapshot.catalog, &key.1, &mut config)
                    .await;
                let version = koguma_proto::version(&config);
                if sent.as_deref() != Some(version.as_str()) {
                    nonce += 1;
                    let response = ConfigResponse {
                        version_info: version.clone(),
                        nonce: nonce.to_string(),
                        config: Some(config),
                        delta: None,
                    };
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                    tracing::debug!(name = %key.1, %version, "zone proxy config sent");
                    status.sent(key, stream_id, &version, Vec::new());
                    sent = Some(version);
                }
            }
            // Registered a moment ago: the next snapshot has it.
            None if server
                .resources
                .catalog()
                .get(kind.resource_type(), "", &key.1)
                .is_some() => {}
            None => {
                let _ = tx
                    .send(Err(Status::not_found(format!(
                        "{} {:?} was deleted",
                        kind.resource_type().kind(),
                        key.1
                    ))))
                    .await;
                return;
            }
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            msg = incoming.message() => match msg {
                Ok(Some(req)) => {
                    if req.leaving && kind == ZoneProxyKind::Ingress {
                        // Other zones stop routing here while it drains.
                        tracing::info!(name = %key.1, "zone ingress is draining: withdrawing its services from other zones");
                        server
                            .resources
                            .set_draining(kind.resource_type(), key, true)
                            .await;
                    }
                    if !req.csr.is_empty() {
                        identities.csr = Some(req.csr.clone());
                        // Issued at the next config computed; a renewal
                        // needs one now.
                        sent = None;
                    }
                    if req.response_nonce != nonce.to_string() {
                        continue;
                    }
                    match req.error_detail {
                        Some(err) => {
                            let rejected = sent.clone().unwrap_or_default();
                            tracing::warn!(name = %key.1, version = %rejected, reason = %err.message, "zone proxy config rejected (NACK)");
                            status.rejected(key, stream_id, &rejected, &err.message);
                        }
                        None => status.acked(key, stream_id, &req.version_info),
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    }
}
