//! The TLS channel to a control plane: koguma-dp's to its zone CP, a zone
//! CP's to its global. The server's certificate is verified against a CA
//! file and the host of the address; skipping that is possible for
//! development only, and said loudly.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("address {0:?}: expected https://HOST:PORT or grpcs://HOST:PORT")]
    Address(String),
    #[error("address {0:?}: the control plane speaks TLS only: use https:// or grpcs://")]
    Plaintext(String),
    #[error(
        "a CA certificate file is required to verify the control plane (or skipping verification, for development only)"
    )]
    NoCa,
    #[error("CA certificate file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

pub struct CpAddress {
    pub host: String,
    pub port: u16,
}

/// `https://HOST[:PORT]` or `grpcs://HOST[:PORT]`.
pub fn parse_address(address: &str, default_port: u16) -> Result<CpAddress, ChannelError> {
    if address.starts_with("http://") || address.starts_with("grpc://") {
        return Err(ChannelError::Plaintext(address.to_string()));
    }
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("grpcs://"))
        .ok_or_else(|| ChannelError::Address(address.to_string()))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse()
                .map_err(|_| ChannelError::Address(address.to_string()))?,
        ),
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(ChannelError::Address(address.to_string()));
    }
    Ok(CpAddress {
        host: host.to_string(),
        port,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_config(ca_file: Option<&Path>, skip_verify: bool) -> Result<ClientConfig, ChannelError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut config = if skip_verify {
        tracing::warn!(
            "TLS verification is skipped: the control plane's certificate is NOT verified; anyone on the path can impersonate it. Development only."
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth()
    } else {
        let path = ca_file.ok_or(ChannelError::NoCa)?;
        let ca_err = |reason: String| ChannelError::Ca {
            path: path.display().to_string(),
            reason,
        };
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))?;
        for cert in certs {
            let cert = cert.map_err(|e| ca_err(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(ca_err("contains no PEM certificate".into()));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A lazily connecting channel: it (re)connects when a stream is opened.
pub fn connect(
    addr: &CpAddress,
    ca_file: Option<&Path>,
    skip_verify: bool,
) -> Result<Channel, ChannelError> {
    let connector = TlsConnector::from(Arc::new(tls_config(ca_file, skip_verify)?));
    let server_name = match addr.host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(addr.host.clone())
            .map_err(|_| ChannelError::Address(addr.host.clone()))?,
    };
    let target = (addr.host.clone(), addr.port);
    // tonic only carries the URI; TLS is ours, so the URI says http.
    let endpoint = Endpoint::from_shared(format!("http://{}:{}", addr.host, addr.port))
        .map_err(|_| ChannelError::Address(addr.host.clone()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(15))
        .keep_alive_while_idle(true);
    let make = tower::service_fn(move |_: Uri| {
        let (connector, server_name, target) =
            (connector.clone(), server_name.clone(), target.clone());
        async move {
            let tcp = TcpStream::connect((target.0.as_str(), target.1)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(make))
}

/// Accepts any server certificate: for connections whose user chose to
/// skip verification (and was warned), such as `--skip-verify` or a store's
/// `verifyNone`. Signatures are still checked.
#[derive(Debug)]
pub struct NoVerification(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = parse_address("https://127.0.0.1:5678", 5678).unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 5678));
        let a = parse_address("https://cp.example:9000/", 5678).unwrap();
        assert_eq!((a.host.as_str(), a.port), ("cp.example", 9000));
        let a = parse_address("https://[::1]:5678", 5678).unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 5678));
        assert!(matches!(
            parse_address("http://x:1", 5678),
            Err(ChannelError::Plaintext(_))
        ));
        assert!(parse_address("x:1", 5678).is_err());
    }
}
