//! The DP server's TLS identity. Unless the user provides a certificate, the
//! CP keeps a self-signed CA in its data dir (created once, so agents keep
//! trusting it) and issues itself a fresh server certificate at each start
//! for every name and address it can be reached at.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tls-cert-file and --tls-key-file go together: give both or neither")]
    HalfPair,
    #[error("cannot create certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

pub struct ServerIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA agents should trust (`--ca-cert-file`), when the CP made it.
    pub ca_file: Option<PathBuf>,
}

fn read(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, content: &str, private: bool) -> Result<(), TlsError> {
    let mode = if private { 0o600 } else { 0o644 };
    crate::private_files::write(path, content, mode).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Names and addresses the server certificate must cover.
fn subject_alt_names(extra_ips: &[IpAddr]) -> Vec<SanType> {
    let mut sans = vec![SanType::DnsName(
        "localhost".try_into().expect("valid DNS name"),
    )];
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(name) = host.to_str().and_then(|h| h.to_string().try_into().ok())
    {
        sans.push(SanType::DnsName(name));
    }
    let mut ips: Vec<IpAddr> = vec![
        "127.0.0.1".parse().expect("literal"),
        "::1".parse().expect("literal"),
    ];
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(addr) = a.address else { continue };
            if let Some(v4) = addr.as_sockaddr_in() {
                ips.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                ips.push(IpAddr::V6(v6.ip()));
            }
        }
    }
    ips.extend(extra_ips.iter().filter(|ip| !ip.is_unspecified()));
    ips.sort();
    ips.dedup();
    sans.extend(ips.into_iter().map(SanType::IpAddress));
    sans
}

/// Valid from an hour ago (clocks differ a little between hosts) for `days`.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// The CA in `dir` (certificate, key), if there is one.
pub fn read_ca(data_dir: &Path) -> Result<Option<(String, String)>, TlsError> {
    let dir = data_dir.join("tls");
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if cert_path.exists() && key_path.exists() {
        return Ok(Some((read(&cert_path)?, read(&key_path)?)));
    }
    Ok(None)
}

/// Puts the CA the instances of one control plane share into `data_dir`,
/// where `prepare` finds it.
pub fn install_ca(data_dir: &Path, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
    if read_ca(data_dir)?.is_some_and(|(c, k)| c == cert_pem && k == key_pem) {
        return Ok(());
    }
    let path = write_ca(data_dir, cert_pem, key_pem)?;
    tracing::info!(path = %path.display(), "installed the DP server CA this control plane's instances share");
    Ok(())
}

/// Writes the CA into `data_dir`, the key 0600; returns the certificate's path.
fn write_ca(data_dir: &Path, cert_pem: &str, key_pem: &str) -> Result<PathBuf, TlsError> {
    let dir = data_dir.join("tls");
    write(&dir.join("ca.key"), key_pem, true)?;
    write(&dir.join("ca.crt"), cert_pem, false)?;
    Ok(dir.join("ca.crt"))
}

/// A new DP server CA: certificate and key, PEM.
pub fn new_ca() -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "koguma-cp CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, 10 * 365);
    Ok(params)
}

fn load_or_create_ca(data_dir: &Path) -> Result<(String, KeyPair), TlsError> {
    let (cert, key) = match read_ca(data_dir)? {
        Some(pair) => pair,
        None => {
            let (cert, key) = new_ca()?;
            let path = write_ca(data_dir, &cert, &key)?;
            tracing::info!(path = %path.display(), "created the DP server CA");
            (cert, key)
        }
    };
    Ok((cert, KeyPair::from_pem(&key)?))
}

pub fn prepare(
    data_dir: &Path,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    extra_ips: &[IpAddr],
) -> Result<ServerIdentity, TlsError> {
    match (cert_file, key_file) {
        (Some(c), Some(k)) => {
            return Ok(ServerIdentity {
                cert_pem: read(c)?,
                key_pem: read(k)?,
                ca_file: None,
            });
        }
        (None, None) => {}
        _ => return Err(TlsError::HalfPair),
    }
    let dir = data_dir.join("tls");
    let (ca_pem, ca_key) = load_or_create_ca(data_dir)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "koguma-cp");
    params.subject_alt_names = subject_alt_names(extra_ips);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, 365);
    let cert = params.signed_by(&key, &issuer)?;
    // Written for people who want to inspect it; the CP serves it from memory.
    write(&dir.join("server.crt"), &cert.pem(), false)?;
    write(&dir.join("server.key"), &key.serialize_pem(), true)?;
    Ok(ServerIdentity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_file: Some(dir.join("ca.crt")),
    })
}
