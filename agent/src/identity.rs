//! This dataplane's mesh identity, agent side. The agent makes its own key
//! pairs (ECDSA P-256) and sends the CP only certificate signing requests:
//! private keys never leave this process. The CP answers with a certificate
//! in the next config; the key it belongs to is found by its public key.
//! At 80 % of a certificate's life the agent makes a new key and asks again.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use koguma_forwarder::PrivateKey;
use rcgen::{CertificateParams, KeyPair, PublicKeyData};

/// Keys kept at once: the one in force, one being renewed, one spare for a
/// renewal that crosses a CP reconnect.
const KEPT_KEYS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot generate a key pair or CSR: {0}")]
    Generate(#[from] rcgen::Error),
}

struct Key {
    public: Vec<u8>,
    pkcs8: Vec<u8>,
    csr: Vec<u8>,
}

fn new_key() -> Result<Key, IdentityError> {
    let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    // The CP decides what the certificate names; the request only proves
    // possession of the key.
    let csr = CertificateParams::default().serialize_request(&pair)?;
    Ok(Key {
        public: pair.der_bytes().to_vec(),
        pkcs8: pair.serialize_der(),
        csr: csr.der().to_vec(),
    })
}

/// What /certs shows of the certificate in force.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub serial: String,
    /// Hex SHA-256 of the DER, as peers see it in `x-forwarded-client-cert`.
    pub sha256: String,
    pub uris: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertInfo {
    pub fn parse(der: &[u8]) -> Option<CertInfo> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        let uris = koguma_forwarder::uri_sans(der);
        Some(CertInfo {
            serial: cert.raw_serial_as_string(),
            sha256: koguma_forwarder::cert_sha256(der),
            uris,
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
        })
    }

    /// When to ask for the next one: at 80 % of this one's life.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life.mul_f64(0.8)
    }
}

pub struct WorkloadKeys {
    // Newest last. Held for short, synchronous lookups only.
    keys: Mutex<Vec<Key>>,
}

impl WorkloadKeys {
    pub fn new() -> Result<WorkloadKeys, IdentityError> {
        Ok(WorkloadKeys {
            keys: Mutex::new(vec![new_key()?]),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Key>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The CSR of the newest key (sent on each new stream).
    pub fn csr(&self) -> Vec<u8> {
        self.lock()
            .last()
            .map(|k| k.csr.clone())
            .unwrap_or_default()
    }

    /// Makes a new key and returns its CSR.
    pub fn renew(&self) -> Result<Vec<u8>, IdentityError> {
        let key = new_key()?;
        let csr = key.csr.clone();
        let mut keys = self.lock();
        keys.push(key);
        if keys.len() > KEPT_KEYS {
            keys.remove(0);
        }
        Ok(csr)
    }

    /// The private key of the certificate `cert_der`, if this agent made it.
    pub fn key_for(&self, cert_der: &[u8]) -> Option<PrivateKey> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
        let public = &cert.public_key().subject_public_key.data;
        self.lock()
            .iter()
            .find(|k| k.public.as_slice() == public.as_ref())
            .map(|k| PrivateKey(k.pkcs8.clone()))
    }
}
