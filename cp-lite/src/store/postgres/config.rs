//! Kuma's PostgreSQL settings (`store.postgres` of kuma-cp.conf, the
//! `KUMA_STORE_POSTGRES_*` variables, the same defaults) and the TLS and
//! pool they describe.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use koguma_proto::channel::NoVerification;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// Kuma's `store.postgres.tls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// No TLS.
    #[value(name = "disable")]
    Disable,
    /// TLS, any certificate (PostgreSQL's `require`).
    #[value(name = "verifyNone")]
    VerifyNone,
    /// TLS, a certificate signed by the CA of --postgres-tls-ca-path.
    #[value(name = "verifyCa")]
    VerifyCa,
    /// As verifyCa, and for the host connected to.
    #[value(name = "verifyFull")]
    VerifyFull,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PostgresArgs {
    #[arg(
        long = "postgres-host",
        default_value = "127.0.0.1",
        env = "KUMA_STORE_POSTGRES_HOST"
    )]
    pub host: String,
    #[arg(
        long = "postgres-port",
        default_value_t = 15432,
        env = "KUMA_STORE_POSTGRES_PORT"
    )]
    pub port: u16,
    #[arg(
        long = "postgres-user",
        default_value = "kuma",
        env = "KUMA_STORE_POSTGRES_USER"
    )]
    pub user: String,
    /// Prefer the variable: a flag's value shows in the process list.
    #[arg(
        long = "postgres-password",
        default_value = "kuma",
        env = "KUMA_STORE_POSTGRES_PASSWORD",
        hide_env_values = true
    )]
    pub password: String,
    #[arg(
        long = "postgres-db-name",
        default_value = "kuma",
        env = "KUMA_STORE_POSTGRES_DB_NAME"
    )]
    pub db_name: String,
    /// Seconds to wait for a connection.
    #[arg(
        long = "postgres-connection-timeout",
        default_value_t = 5,
        env = "KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT"
    )]
    pub connection_timeout: u64,
    /// Connections in the pool at most (besides the one of the change feed).
    #[arg(
        long = "postgres-max-open-connections",
        default_value_t = 50,
        env = "KUMA_STORE_POSTGRES_MAX_OPEN_CONNECTIONS"
    )]
    pub max_open_connections: usize,
    #[arg(
        long = "postgres-tls-mode",
        value_enum,
        default_value = "disable",
        env = "KUMA_STORE_POSTGRES_TLS_MODE"
    )]
    pub tls_mode: TlsMode,
    /// The client certificate, for a server that authenticates by certificate.
    #[arg(
        long = "postgres-tls-cert-path",
        env = "KUMA_STORE_POSTGRES_TLS_CERT_PATH"
    )]
    pub tls_cert_path: Option<PathBuf>,
    #[arg(
        long = "postgres-tls-key-path",
        env = "KUMA_STORE_POSTGRES_TLS_KEY_PATH"
    )]
    pub tls_key_path: Option<PathBuf>,
    /// The CA that signed the server's certificate (verifyCa, verifyFull).
    #[arg(long = "postgres-tls-ca-path", env = "KUMA_STORE_POSTGRES_TLS_CA_PATH")]
    pub tls_ca_path: Option<PathBuf>,
}

fn bad(setting: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Schema(format!("store.postgres {setting}: {reason}"))
}

impl PostgresArgs {
    /// Kuma's checks (`PostgresStoreConfig.Validate`), naming the variable.
    pub fn validate(&self) -> Result<(), StoreError> {
        for (name, value) in [
            ("KUMA_STORE_POSTGRES_HOST", &self.host),
            ("KUMA_STORE_POSTGRES_USER", &self.user),
            ("KUMA_STORE_POSTGRES_PASSWORD", &self.password),
            ("KUMA_STORE_POSTGRES_DB_NAME", &self.db_name),
        ] {
            if value.is_empty() {
                return Err(bad(name, "should not be empty"));
            }
        }
        if self.max_open_connections == 0 {
            return Err(bad(
                "KUMA_STORE_POSTGRES_MAX_OPEN_CONNECTIONS",
                "should be at least 1",
            ));
        }
        if matches!(self.tls_mode, TlsMode::VerifyCa | TlsMode::VerifyFull)
            && self.tls_ca_path.is_none()
        {
            return Err(bad(
                "KUMA_STORE_POSTGRES_TLS_CA_PATH",
                "verifyCa and verifyFull need the CA that signed the server's certificate",
            ));
        }
        match (&self.tls_cert_path, &self.tls_key_path) {
            (Some(_), None) => Err(bad(
                "KUMA_STORE_POSTGRES_TLS_KEY_PATH",
                "cannot be empty when the certificate path is given",
            )),
            (None, Some(_)) => Err(bad(
                "KUMA_STORE_POSTGRES_TLS_CERT_PATH",
                "cannot be empty when the key path is given",
            )),
            _ => Ok(()),
        }
    }

    /// Where a log line says the store is (never the password).
    pub fn describe(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.db_name
        )
    }

    pub fn pg_config(&self, application_name: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.db_name)
            .application_name(application_name)
            .connect_timeout(Duration::from_secs(self.connection_timeout))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .ssl_mode(match self.tls_mode {
                TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
                _ => tokio_postgres::config::SslMode::Require,
            });
        c
    }

    pub fn tls(&self) -> Result<MakeRustlsConnect, StoreError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("tls", e))?;
        let roots = || -> Result<Arc<RootCertStore>, StoreError> {
            let path = self
                .tls_ca_path
                .as_ref()
                .ok_or_else(|| bad("KUMA_STORE_POSTGRES_TLS_CA_PATH", "missing"))?;
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                bad(
                    "KUMA_STORE_POSTGRES_TLS_CA_PATH",
                    format!("{}: {e}", path.display()),
                )
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| bad("KUMA_STORE_POSTGRES_TLS_CA_PATH", e))?;
                roots
                    .add(cert)
                    .map_err(|e| bad("KUMA_STORE_POSTGRES_TLS_CA_PATH", e))?;
            }
            Ok(Arc::new(roots))
        };
        let builder = match self.tls_mode {
            TlsMode::Disable | TlsMode::VerifyNone => {
                if self.tls_mode == TlsMode::VerifyNone {
                    tracing::warn!(
                        "KUMA_STORE_POSTGRES_TLS_MODE=verifyNone: the database's certificate is not verified"
                    );
                }
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            }
            TlsMode::VerifyFull => builder.with_root_certificates(roots()?),
            TlsMode::VerifyCa => {
                let inner = WebPkiServerVerifier::builder_with_provider(roots()?, provider)
                    .build()
                    .map_err(|e| bad("KUMA_STORE_POSTGRES_TLS_CA_PATH", e))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(CaOnly(inner)))
            }
        };
        let config = match (&self.tls_cert_path, &self.tls_key_path) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        bad(
                            "KUMA_STORE_POSTGRES_TLS_CERT_PATH",
                            format!("{}: {e}", cert.display()),
                        )
                    })?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    bad(
                        "KUMA_STORE_POSTGRES_TLS_KEY_PATH",
                        format!("{}: {e}", key.display()),
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad("KUMA_STORE_POSTGRES_TLS_KEY_PATH", e))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

/// verifyCa: the chain must lead to the CA; the name is not checked.
#[derive(Debug)]
struct CaOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for CaOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        pg: PostgresArgs,
    }

    fn parse(args: &[&str]) -> PostgresArgs {
        Flags::parse_from(std::iter::once("koguma-cp").chain(args.iter().copied())).pg
    }

    #[test]
    fn kumas_defaults_and_checks() {
        let pg = parse(&[]);
        assert_eq!(pg.describe(), "postgres://kuma@127.0.0.1:15432/kuma");
        assert_eq!((pg.connection_timeout, pg.max_open_connections), (5, 50));
        assert!(pg.validate().is_ok());
        let err = |args: &[&str]| parse(args).validate().unwrap_err().to_string();
        assert!(
            err(&["--postgres-tls-mode", "verifyFull"]).contains("KUMA_STORE_POSTGRES_TLS_CA_PATH"),
            "{}",
            err(&["--postgres-tls-mode", "verifyFull"])
        );
        assert!(
            err(&["--postgres-tls-cert-path", "c.pem"])
                .contains("KUMA_STORE_POSTGRES_TLS_KEY_PATH")
        );
        assert!(
            err(&["--postgres-user", ""]).contains("KUMA_STORE_POSTGRES_USER: should not be empty")
        );
        assert!(err(&["--postgres-max-open-connections", "0"]).contains("at least 1"));
    }
}
