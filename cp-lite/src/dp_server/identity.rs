//! One dataplane's workload certificate, as its stream sees it: the latest
//! CSR the agent sent, and the certificate issued over it. A certificate is
//! issued again when the agent sends a new CSR (it renews at 80 % of the
//! lifetime) or when what the certificate says changes: the dataplane's
//! tags, the mesh's backend, CA or certificate lifetime.

use std::time::Duration;

use koguma_proto::v1 as pb;

use super::DpServer;
use crate::catalog::{Catalog, DataplaneKey};
use crate::mesh_ca::workload_uris;

#[derive(PartialEq)]
struct Inputs {
    csr_seq: u64,
    backend: String,
    ca_der: Vec<u8>,
    uris: Vec<String>,
    lifetime: Duration,
}

#[derive(Default)]
pub struct SessionIdentity {
    csr: Option<Vec<u8>>,
    csr_seq: u64,
    issued: Option<(Inputs, Vec<u8>)>,
}

impl SessionIdentity {
    pub fn set_csr(&mut self, csr: Vec<u8>) {
        if self.csr.as_ref() != Some(&csr) {
            self.csr = Some(csr);
            self.csr_seq += 1;
        }
    }

    /// Puts the mesh CA and this dataplane's certificate into `config`
    /// (whose `mtls` is set when the mesh has mTLS on).
    pub async fn fill(
        &mut self,
        server: &DpServer,
        catalog: &Catalog,
        key: &DataplaneKey,
        config: &mut pb::ProxyConfig,
    ) {
        let (mesh, name) = key;
        let Some(mtls) = config.mtls.as_mut() else {
            self.issued = None;
            return;
        };
        let Some(backend) = catalog.mesh(mesh).and_then(|m| m.mtls_backend()) else {
            return;
        };
        let ca = match server.cas.get(mesh, backend).await {
            Ok(ca) => ca,
            Err(e) => {
                tracing::error!(%mesh, dataplane = %name, error = %e, "no mesh CA: the dataplane gets no certificate");
                return;
            }
        };
        ca.fill(mtls, None);
        let Some(csr) = &self.csr else {
            tracing::warn!(%mesh, dataplane = %name, "mesh mTLS is on but the agent sent no CSR: it gets no certificate");
            return;
        };
        let Some(dp) = catalog
            .get(koguma_api::ResourceType::Dataplane, mesh, name)
            .and_then(|r| r.resource.as_dataplane())
        else {
            return;
        };
        let inputs = Inputs {
            csr_seq: self.csr_seq,
            backend: backend.name.clone(),
            ca_der: ca.cert_der.clone(),
            uris: workload_uris(mesh, dp),
            lifetime: backend.dp_cert_lifetime(),
        };
        if self.issued.as_ref().is_none_or(|(i, _)| *i != inputs) {
            match ca.issue(csr, &inputs.uris, inputs.lifetime) {
                Ok(issued) => {
                    tracing::info!(%mesh, dataplane = %name, identities = ?inputs.uris, not_after = %issued.not_after, "workload certificate issued");
                    server
                        .status
                        .cert_issued(key, issued.not_after, &issued.cert_der);
                    self.issued = Some((inputs, issued.cert_der));
                }
                Err(e) => {
                    tracing::error!(%mesh, dataplane = %name, error = %e, "cannot issue the workload certificate");
                    // A bad CSR stays bad: wait for the agent's next one.
                    self.csr = None;
                    return;
                }
            }
        }
        if let Some((_, cert)) = &self.issued {
            ca.fill(mtls, Some(cert));
        }
    }
}
