//! Mesh mTLS between proxies: TLS 1.3 only, ALPN `kuma` to mark mesh
//! traffic, identities as SPIFFE URI SANs. One [`MeshTls`] is built per
//! certificate in force (a config push that does not change it keeps it,
//! and with it the session caches that let reconnecting peers resume);
//! connections made or accepted after a renewal use the new certificate,
//! established ones keep theirs.
//!
//! HTTP between Koguma sidecars is HTTP/2: a pooled HTTP connection offers
//! ALPN `h2` before `kuma`, and an HTTP inbound picks `h2` when offered. A
//! peer that knows only `kuma` (Kuma's Envoy, a TCP inbound) picks that, and
//! the connection speaks HTTP/1.1 as before.
//!
//! Crypto: aws-lc-rs. Measured here (in-memory mutual TLS 1.3 handshakes
//! with P-256 certificates, and AES-GCM bulk), it did ~15 % more handshakes
//! per second and ~45 % more bulk throughput than ring; see bench/NOTES.md.

mod detect;
mod maybe_tls;
mod session_cache;
pub mod upstream;
pub mod verify;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{MeshTlsConfig, MtlsMode};
pub use detect::{Detected, PrefixedIo, detect, peek_client_hello};
pub use maybe_tls::MaybeTls;
use verify::{MeshClientVerifier, MeshServerVerifier, uri_sans};

pub const ALPN_KUMA: &[u8] = b"kuma";
pub const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("mesh mTLS: no certificate was issued to this dataplane yet")]
    NoCertificate,
    #[error("mesh mTLS: the mesh CA certificate is not usable: {0}")]
    BadCa(String),
    #[error("mesh mTLS: the private key is not usable: {0}")]
    BadKey(String),
    #[error("mesh mTLS: the certificate does not match this agent's key: {0}")]
    KeyMismatch(String),
    #[error("mesh mTLS: {0}")]
    Config(#[from] rustls::Error),
}

pub struct MeshTls {
    pub mode: MtlsMode,
    /// For inbounds that carry TCP, and zone proxies: ALPN `kuma` only.
    pub server: Arc<ServerConfig>,
    /// For HTTP inbounds: `h2` when the caller offers it, else `kuma`.
    /// Shares `server`'s session cache.
    pub server_h2: Arc<ServerConfig>,
    /// This proxy's own SPIFFE ID (the first `spiffe://` URI SAN).
    pub own_identity: String,
    /// Changes with the CA or this proxy's certificate.
    pub fingerprint: u64,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: Arc<CryptoProvider>,
}

fn fnv(parts: &[Vec<u8>]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flatten() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl MeshTls {
    pub fn new(cfg: &MeshTlsConfig) -> Result<MeshTls, TlsError> {
        if cfg.cert_chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let provider = Arc::new(mesh_provider());
        let mut roots = RootCertStore::empty();
        for ca in &cfg.ca_certs {
            roots
                .add(CertificateDer::from(ca.clone()))
                .map_err(|e| TlsError::BadCa(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TlsError::BadCa("no CA certificate was sent".into()));
        }
        let roots = Arc::new(roots);
        let chain: Vec<CertificateDer<'static>> = cfg
            .cert_chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cfg.key.0.clone()));
        let signing = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| TlsError::BadKey(e.to_string()))?;
        CertifiedKey::new(chain.clone(), signing)
            .keys_match()
            .map_err(|e| TlsError::KeyMismatch(e.to_string()))?;
        let own_identity = uri_sans(&chain[0])
            .into_iter()
            .find(|u| u.starts_with("spiffe://"))
            .unwrap_or_default();
        let verifier =
            MeshClientVerifier::new(roots.clone(), cfg.peer_uri_prefix.clone(), provider.clone())?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN_KUMA.to_vec()];
        // Stateless tickets (encrypted under a key rotated every 6 hours),
        // as BoringSSL gives Envoy: any number of peers can resume, where
        // the default stateful cache of 256 sessions turns away most of
        // them under a high connection rate.
        server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        let mut server_h2 = server.clone();
        server_h2.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_KUMA.to_vec()];
        Ok(MeshTls {
            mode: cfg.mode,
            server: Arc::new(server),
            server_h2: Arc::new(server_h2),
            own_identity,
            fingerprint: fnv(&[cfg.ca_certs.concat(), cfg.cert_chain.concat()]),
            roots,
            chain,
            key,
            provider,
        })
    }

    /// The client side for connections to `expected` (an exact SPIFFE ID).
    pub fn client_for(&self, expected: &str) -> Result<MeshClientTls, TlsError> {
        let verifier = MeshServerVerifier::new(self.roots.clone(), expected.into(), &self.provider);
        let mut client = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        client.alpn_protocols = vec![ALPN_KUMA.to_vec()];
        client.resumption =
            rustls::client::Resumption::store(Arc::new(session_cache::MeshSessionCache::default()));
        let mut h2 = client.clone();
        h2.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_KUMA.to_vec()];
        Ok(MeshClientTls {
            kuma: Arc::new(client),
            h2: Arc::new(h2),
        })
    }
}

/// aws-lc-rs with AES-128-GCM/SHA-256 preferred (Envoy's BoringSSL order):
/// the handshake's key schedule then runs on SHA-256, which CPUs
/// accelerate, rather than SHA-384, and bulk data takes 10 AES rounds
/// rather than 14. Measured in bench/NOTES.md.
fn mesh_provider() -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::aws_lc_rs::default_provider()
    }
}

/// The client side of mesh mTLS towards one service. Both configs share
/// one session cache, so either kind of connection can resume a session.
pub struct MeshClientTls {
    /// ALPN `kuma`: TCP, and HTTP connections that must stay HTTP/1.1
    /// (upgrades, CONNECT).
    pub kuma: Arc<ClientConfig>,
    /// ALPN `h2`, then `kuma`: pooled HTTP connections.
    pub h2: Arc<ClientConfig>,
}
