//! TLS a zone egress originates to a host outside the mesh (an
//! ExternalService with `networking.tls.enabled`): the CA given, else the
//! system's roots; the name given, else the host; TLS 1.2 or 1.3, as the
//! host speaks.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::TlsError;
use crate::config::UpstreamTlsConfig;

/// Debian's bundle of the system's trusted roots.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The client side for one external host, and the name it is sent.
pub fn client(
    cfg: &UpstreamTlsConfig,
    host: &str,
) -> Result<(Arc<ClientConfig>, ServerName<'static>), TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = match &cfg.ca_pem {
        Some(pem) => CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::BadCa(format!("caCert: {e}")))?,
        None => CertificateDer::pem_file_iter(SYSTEM_ROOTS)
            .and_then(|i| i.collect::<Result<_, _>>())
            .map_err(|e| TlsError::BadCa(format!("the system's roots ({SYSTEM_ROOTS}): {e}")))?,
    };
    for c in certs {
        roots
            .add(c)
            .map_err(|e| TlsError::BadCa(format!("caCert: {e}")))?;
    }
    let name = if cfg.server_name.is_empty() {
        host
    } else {
        &cfg.server_name
    };
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|_| TlsError::BadCa(format!("{name:?} is not a valid server name")))?;
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::BadCa(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(HostVerifier {
            inner: webpki,
            skip_hostname: cfg.skip_hostname_verification,
        }));
    let config = match (&cfg.client_cert_pem, &cfg.client_key_pem) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::BadKey(format!("clientCert: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(&key.0)
                .map_err(|e| TlsError::BadKey(format!("clientKey: {e}")))?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok((Arc::new(config), server_name))
}

/// The chain is always checked; the name unless told not to.
#[derive(Debug)]
struct HostVerifier {
    inner: Arc<WebPkiServerVerifier>,
    skip_hostname: bool,
}

impl ServerCertVerifier for HostVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.skip_hostname => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
