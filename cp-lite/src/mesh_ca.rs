//! The builtin CA of each mTLS mesh and the workload certificates it signs.
//! The CA is created when a backend is first enabled and kept in the store
//! as secrets (Kuma's names: `<mesh>.ca-builtin-cert-<backend>` and
//! `<mesh>.ca-builtin-key-<backend>`). Workload certificates are signed
//! over the agent's CSR: the CP never sees a workload's private key, and it
//! writes the identities itself from the Dataplane, whatever the CSR asks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use koguma_api::MtlsBackend;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RsaKeySize, SanType,
    SerialNumber,
};
use rustls::pki_types::CertificateSigningRequestDer;

use crate::resources::{ResourceError, Resources};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("mesh {mesh:?}, backend {backend:?}: cannot create the CA: {source}")]
    Create {
        mesh: String,
        backend: String,
        source: rcgen::Error,
    },
    #[error("mesh {mesh:?}, backend {backend:?}: the stored CA cannot be loaded: {reason}")]
    Load {
        mesh: String,
        backend: String,
        reason: String,
    },
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(rcgen::Error),
    #[error("cannot sign the workload certificate: {0}")]
    Sign(rcgen::Error),
    #[error(
        "the mesh CA expired at {0}: replace its mtls backend (or its caCert.expiration) to issue certificates again"
    )]
    Expired(time::OffsetDateTime),
    #[error("identity {0:?} cannot be written into a certificate")]
    BadIdentity(String),
    #[error(
        "mesh {0:?}: its CA has not arrived from the global control plane yet (a zone never makes its own)"
    )]
    NotSynced(String),
    #[error("mesh {mesh:?}, provided CA {backend:?}: conf.{part}: {reason}")]
    Provided {
        mesh: String,
        backend: String,
        /// `cert` or `key`.
        part: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Store(#[from] ResourceError),
    #[error("creating the CA did not finish: {0}")]
    Task(String),
}

impl CaError {
    /// For a provided CA that cannot be used: the backend's field at fault
    /// (under `mtls.backends[i]`) and why.
    pub fn provided_field(&self) -> Option<(String, &str)> {
        match self {
            CaError::Provided { part, reason, .. } => Some((format!("conf.{part}"), reason)),
            _ => None,
        }
    }
}

pub struct MeshCa {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// No certificate it signs outlives it.
    not_after: time::OffsetDateTime,
}

/// A signed workload certificate.
pub struct Issued {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    pub not_after: time::OffsetDateTime,
}

/// (mesh, backend) → the mesh's secret epoch when read, and the CA.
type CaCache = HashMap<(String, String), (u64, Arc<MeshCa>)>;

pub struct MeshCas {
    resources: Arc<Resources>,
    /// Loaded CAs by (mesh, backend), with the mesh's secret epoch they
    /// were read at. Never held across an await.
    cache: Mutex<CaCache>,
    /// A federated zone uses the CA its global made; it never makes one.
    creates: bool,
}

fn secret_names(mesh: &str, backend: &str) -> (String, String) {
    (
        format!("{mesh}.ca-builtin-cert-{backend}"),
        format!("{mesh}.ca-builtin-key-{backend}"),
    )
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // aws-lc's RNG does not fail on Linux; a zero serial would still be a
    // valid, if unlucky, certificate.
    let _ = rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes);
    bytes[0] &= 0x7f; // positive, as RFC 5280 asks
    bytes[0] |= 0x01; // and never zero
    SerialNumber::from_slice(&bytes)
}

fn create(mesh: &str, backend: &MtlsBackend) -> Result<(String, String), rcgen::Error> {
    let key = match backend.rsa_bits() {
        None => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        Some(bits) => {
            let size = match bits {
                3072 => RsaKeySize::_3072,
                4096 => RsaKeySize::_4096,
                _ => RsaKeySize::_2048,
            };
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)?
        }
    };
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Koguma");
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "Mesh");
    params.distinguished_name.push(DnType::CommonName, mesh);
    params.subject_alt_names = vec![SanType::URI(format!("spiffe://{mesh}").try_into()?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::seconds(10);
    params.not_after = now + backend.ca_lifetime();
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl MeshCas {
    pub fn new(resources: Arc<Resources>, creates: bool) -> MeshCas {
        MeshCas {
            resources,
            cache: Mutex::new(HashMap::new()),
            creates,
        }
    }

    /// The store names of the CA of `backend` in `mesh`: certificate, key.
    pub fn secret_names(&self, mesh: &str, backend: &MtlsBackend) -> [String; 2] {
        let (c, k) = secret_names(mesh, &backend.name);
        [c, k]
    }

    /// The CA's certificate and key as stored, created first if need be:
    /// what the global sends to its zones.
    pub async fn secrets(
        &self,
        mesh: &str,
        backend: &MtlsBackend,
    ) -> Result<Vec<(String, String)>, CaError> {
        self.get(mesh, backend).await?;
        let mut out = Vec::new();
        for name in self.secret_names(mesh, backend) {
            if let Some(data) = self.resources.secret(mesh, &name).await? {
                out.push((name, data));
            }
        }
        Ok(out)
    }

    /// The CA of `backend` in `mesh`, created and stored on first use. Two
    /// instances (or two requests) creating it at once store one: the
    /// first to commit; the other uses it.
    pub async fn get(&self, mesh: &str, backend: &MtlsBackend) -> Result<Arc<MeshCa>, CaError> {
        let key = (mesh.to_string(), backend.name.clone());
        // Another instance may have replaced the mesh's secrets since.
        let epoch = self.resources.catalog().secret_epoch(mesh);
        if let Some((at, ca)) = self.cache().get(&key)
            && *at == epoch
        {
            return Ok(ca.clone());
        }
        if backend.kind == "provided" {
            let ca = Arc::new(self.load_provided(mesh, backend)?);
            tracing::info!(mesh, backend = %backend.name, "loaded the provided mesh CA");
            self.cache().insert(key, (epoch, ca.clone()));
            return Ok(ca);
        }
        let (cert_name, key_name) = secret_names(mesh, &backend.name);
        let stored = (
            self.resources.secret(mesh, &cert_name).await?,
            self.resources.secret(mesh, &key_name).await?,
        );
        let (cert_pem, key_pem) = match stored {
            (Some(c), Some(k)) => (c, k),
            _ if !self.creates => return Err(CaError::NotSynced(mesh.into())),
            (None, None) => self.create(mesh, backend, &key_name, &cert_name).await?,
            _ => {
                // Half a pair, left by a version that stored them apart
                // and stopped in between: replaced whole.
                let (c, k) = self.generate(mesh, backend).await?;
                self.resources.replace_secret(mesh, &key_name, &k).await?;
                self.resources.replace_secret(mesh, &cert_name, &c).await?;
                (c, k)
            }
        };
        let ca = MeshCa::load(cert_pem, &key_pem).map_err(|reason| CaError::Load {
            mesh: mesh.into(),
            backend: backend.name.clone(),
            reason,
        })?;
        let ca = Arc::new(ca);
        self.cache().insert(key, (epoch, ca.clone()));
        Ok(ca)
    }

    /// A new CA, made off the runtime's threads (an RSA key takes a while).
    async fn generate(
        &self,
        mesh: &str,
        backend: &MtlsBackend,
    ) -> Result<(String, String), CaError> {
        let (m, b) = (mesh.to_string(), backend.clone());
        let made = tokio::task::spawn_blocking(move || create(&m, &b)).await;
        let made = made.map_err(|e| CaError::Task(e.to_string()))?;
        made.map_err(|source| CaError::Create {
            mesh: mesh.into(),
            backend: backend.name.clone(),
            source,
        })
    }

    /// Makes and stores the CA unless someone stores one first; returns
    /// the stored certificate and key.
    async fn create(
        &self,
        mesh: &str,
        backend: &MtlsBackend,
        key_name: &str,
        cert_name: &str,
    ) -> Result<(String, String), CaError> {
        let (c, k) = self.generate(mesh, backend).await?;
        // `get` found neither half: no need to read them again first.
        let made = [
            (key_name.to_string(), k),
            (cert_name.to_string(), c.clone()),
        ];
        let stored = self.resources.insert_secrets(mesh, &made).await?;
        let [key_pem, cert_pem]: [String; 2] = stored
            .try_into()
            .map_err(|_| CaError::Task("the store returned no CA".into()))?;
        if cert_pem == c {
            tracing::info!(mesh, backend = %backend.name, rsa_bits = ?backend.rsa_bits(), "created the mesh CA");
        } else {
            tracing::info!(mesh, backend = %backend.name, "another control-plane instance created the mesh CA first: using its");
        }
        Ok((cert_pem, key_pem))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, CaCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A provided CA: its certificate and key from their data sources (a
    /// Secret of the mesh, a file or inline), checked to be a CA and a pair.
    fn load_provided(&self, mesh: &str, backend: &MtlsBackend) -> Result<MeshCa, CaError> {
        let fail = |part: &'static str, reason: String| CaError::Provided {
            mesh: mesh.into(),
            backend: backend.name.clone(),
            part,
            reason,
        };
        let (cert, key) = backend
            .provided()
            .ok_or_else(|| fail("cert", "a provided CA needs conf.cert and conf.key".into()))?;
        let catalog = self.resources.catalog();
        let read = |source: &koguma_api::DataSource, part: &'static str| {
            source
                .read_with(|name| catalog.secret_bytes(mesh, name))
                .and_then(|b| String::from_utf8(b).map_err(|_| "is not PEM text".to_string()))
                .map_err(|reason| fail(part, reason))
        };
        let (cert_pem, key_pem) = (read(cert, "cert")?, read(key, "key")?);
        MeshCa::load_provided(cert_pem, &key_pem).map_err(|(part, reason)| fail(part, reason))
    }

    /// Forgets cached CAs of meshes that were deleted or changed backend.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.cache().retain(|(m, b), _| keep(m, b));
    }
}

fn rustls_pemfile_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}

impl MeshCa {
    /// Puts this CA, and `cert` when there is one, into a config's mTLS.
    pub fn fill(&self, mtls: &mut koguma_proto::v1::MeshTls, cert: Option<&[u8]>) {
        mtls.ca_certs = vec![self.cert_der.clone()];
        if let Some(cert) = cert {
            mtls.cert_chain = vec![cert.to_vec()];
        }
    }

    fn load(cert_pem: String, key_pem: &str) -> Result<MeshCa, String> {
        let signing_key = KeyPair::from_pem(key_pem).map_err(|e| e.to_string())?;
        let cert_der = rustls_pemfile_der(&cert_pem).ok_or("bad PEM")?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, signing_key).map_err(|e| e.to_string())?;
        let not_after = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| e.to_string())?
            .1
            .validity()
            .not_after
            .to_datetime();
        Ok(MeshCa {
            cert_der,
            cert_pem,
            issuer,
            not_after,
        })
    }

    /// A CA the user gave: the certificate must be a CA's, in force, and
    /// the key its own. `Err`: which part (`cert`, `key`) and why.
    fn load_provided(cert_pem: String, key_pem: &str) -> Result<MeshCa, (&'static str, String)> {
        let cert_der = rustls_pemfile_der(&cert_pem)
            .ok_or(("cert", "is not a PEM certificate".to_string()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| ("cert", format!("cannot be parsed: {e}")))?;
        let is_ca = parsed
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca);
        if !is_ca {
            return Err((
                "cert",
                "is not a CA certificate (basicConstraints CA:TRUE is missing)".into(),
            ));
        }
        if !parsed.validity().is_valid() {
            return Err((
                "cert",
                "is not valid now (expired, or not yet valid)".into(),
            ));
        }
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| ("key", format!("is not a PEM private key (PKCS#8): {e}")))?;
        if key.public_key_raw() != &*parsed.tbs_certificate.subject_pki.subject_public_key.data {
            return Err(("key", "does not belong to the certificate".into()));
        }
        MeshCa::load(cert_pem, key_pem).map_err(|e| ("cert", e))
    }

    /// Signs a workload certificate for the public key of `csr_der`, with
    /// exactly `uris` as its identities.
    pub fn issue(
        &self,
        csr_der: &[u8],
        uris: &[String],
        lifetime: Duration,
    ) -> Result<Issued, CaError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(CaError::BadCsr)?;
        let mut params = CertificateParams::default();
        for uri in uris {
            let ia5 = uri
                .as_str()
                .try_into()
                .map_err(|_| CaError::BadIdentity(uri.clone()))?;
            params.subject_alt_names.push(SanType::URI(ia5));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        if self.not_after <= now {
            return Err(CaError::Expired(self.not_after));
        }
        params.not_before = now - time::Duration::seconds(10);
        // A certificate that outlived its CA would fail every handshake
        // from the CA's expiry on, whatever its own date says.
        params.not_after = (now + lifetime).min(self.not_after);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let not_after = params.not_after;
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(CaError::Sign)?;
        Ok(Issued {
            cert_der: signed.der().to_vec(),
            cert_pem: signed.pem(),
            not_after,
        })
    }
}

/// The identities a dataplane is entitled to: `spiffe://<mesh>/<service>`
/// for each service of its inbounds, and `kuma://<tag>/<value>` for every
/// inbound tag, as Kuma issues them. A dataplane that names no service
/// (outbounds only, or tag-less inbounds) is `unknown`, Kuma's
/// `ServiceUnknown`.
pub fn workload_uris(mesh: &str, dp: &koguma_api::DataplaneSpec) -> Vec<String> {
    let mut services = std::collections::BTreeSet::new();
    let mut tags = std::collections::BTreeSet::new();
    for inbound in dp.networking().into_iter().flat_map(|n| &n.inbound) {
        if !inbound.service().is_empty() {
            services.insert(format!("spiffe://{mesh}/{}", inbound.service()));
        }
        for (k, v) in &inbound.tags {
            tags.insert(format!("kuma://{k}/{v}"));
        }
    }
    if services.is_empty() {
        services.insert(format!("spiffe://{mesh}/{UNKNOWN_SERVICE}"));
    }
    services.into_iter().chain(tags).collect()
}

/// Kuma's name for the service of a dataplane that names none.
pub const UNKNOWN_SERVICE: &str = "unknown";

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(ca_expiration: &str) -> MtlsBackend {
        serde_json::from_value(serde_json::json!({
            "name": "ca-1", "type": "builtin",
            "conf": {"caCert": {"expiration": ca_expiration}}
        }))
        .expect("backend")
    }

    fn csr() -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        CertificateParams::default()
            .serialize_request(&key)
            .expect("csr")
            .der()
            .to_vec()
    }

    fn not_after(der: &[u8]) -> time::OffsetDateTime {
        x509_parser::parse_x509_certificate(der)
            .expect("cert")
            .1
            .validity()
            .not_after
            .to_datetime()
    }

    #[test]
    fn a_workload_certificate_never_outlives_its_ca() {
        let (cert, key) = create("m", &backend("1h")).expect("ca");
        let ca = MeshCa::load(cert, &key).expect("load");
        let uris = ["spiffe://m/web".to_string()];
        let long = ca
            .issue(&csr(), &uris, Duration::from_secs(86_400))
            .expect("issue");
        assert_eq!(not_after(&long.cert_der), ca.not_after);
        let short = ca
            .issue(&csr(), &uris, Duration::from_secs(60))
            .expect("issue");
        assert!(not_after(&short.cert_der) < ca.not_after);
    }
}
