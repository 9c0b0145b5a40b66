//! `koguma-cp generate dataplane-token`, `generate zone-token` and
//! `generate workload-certificate`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use http::Method;
use serde_json::{Value, json};

use super::{ApiClient, describe_error};

#[derive(clap::Subcommand)]
pub enum Generate {
    /// Print a token that lets one dataplane register (koguma-dp --dataplane-token-file).
    DataplaneToken {
        #[arg(long, short = 'm', default_value = "default")]
        mesh: String,
        /// The dataplane's name; empty allows any name in the mesh.
        #[arg(long, default_value = "")]
        name: String,
        /// k=v: every inbound of the dataplane must carry one of the values
        /// given for k (repeat the flag to allow several).
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        #[arg(long, default_value = "24h")]
        valid_for: String,
    },
    /// Print a token that lets a zone CP (or zone proxy) connect to this
    /// global (koguma-cp run --zone-token-file). Run it against the global.
    ZoneToken {
        #[arg(long)]
        zone: String,
        /// cp, ingress or egress (repeat or comma-separate); default: all three.
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
        #[arg(long, default_value = "24h")]
        valid_for: String,
    },
    /// Print a token for calling the REST API from another host (send it
    /// with --api-token-file). Needs an admin: run it on the CP's host.
    UserToken {
        #[arg(long)]
        name: String,
        /// Groups the user is in (repeat or comma-separate); mesh-system:admin
        /// may issue tokens and certificates.
        #[arg(long = "group", value_delimiter = ',')]
        groups: Vec<String>,
        #[arg(long, default_value = "24h")]
        valid_for: String,
    },
    /// Issue a workload certificate of the mesh CA for a proxy that is not
    /// koguma-dp (e.g. an Envoy). The key is generated here and never sent.
    WorkloadCertificate {
        #[arg(long, short = 'm', default_value = "default")]
        mesh: String,
        /// The kuma.io/service the certificate names (spiffe://<mesh>/<service>).
        #[arg(long)]
        service: String,
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Defaults to the mesh's dpCert.rotation.expiration.
        #[arg(long)]
        valid_for: Option<String>,
        #[arg(long)]
        cert_file: PathBuf,
        #[arg(long)]
        key_file: PathBuf,
        /// Where to write the mesh CA certificate, for the peer's validation.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.into(), v.into())),
        _ => Err(format!("{s:?}: expected key=value")),
    }
}

/// Prints the token a `POST /tokens/...` returns.
async fn print_token(api: &ApiClient, path: &str, body: Value) -> anyhow::Result<()> {
    let (status, bytes) = api
        .call_raw(Method::POST, path, Some(body.to_string().into_bytes()))
        .await?;
    if !status.is_success() {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        bail!("{}", describe_error(status, &v));
    }
    println!("{}", String::from_utf8_lossy(&bytes).trim());
    Ok(())
}

pub async fn run(api: &ApiClient, what: Generate) -> anyhow::Result<()> {
    match what {
        Generate::UserToken {
            name,
            groups,
            valid_for,
        } => {
            let body = json!({"name": name, "groups": groups, "validFor": valid_for});
            print_token(api, "/tokens/user", body).await?;
        }
        Generate::ZoneToken {
            zone,
            scope,
            valid_for,
        } => {
            let body = json!({"zone": zone, "scope": scope, "validFor": valid_for});
            print_token(api, "/tokens/zone", body).await?;
        }
        Generate::DataplaneToken {
            mesh,
            name,
            tags,
            valid_for,
        } => {
            let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in tags {
                grouped.entry(k).or_default().push(v);
            }
            let body = json!({"mesh": mesh, "name": name, "tags": grouped, "type": "dataplane", "validFor": valid_for});
            print_token(api, "/tokens/dataplane", body).await?;
        }
        Generate::WorkloadCertificate {
            mesh,
            service,
            tags,
            valid_for,
            cert_file,
            key_file,
            ca_file,
        } => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
            let body = json!({
                "csr": csr.pem()?,
                "service": service,
                "tags": tags.into_iter().collect::<BTreeMap<_, _>>(),
                "validFor": valid_for,
            });
            let (status, v) = api
                .call(
                    Method::POST,
                    &format!("/meshes/{mesh}/workload-certificates"),
                    Some(body.to_string().into_bytes()),
                )
                .await?;
            if !status.is_success() {
                bail!("{}", describe_error(status, &v));
            }
            let cert = v["certificate"].as_str().unwrap_or_default();
            write_private(&key_file, &key.serialize_pem())?;
            std::fs::write(&cert_file, cert)
                .with_context(|| format!("cannot write {}", cert_file.display()))?;
            if let Some(ca) = ca_file {
                std::fs::write(&ca, v["caCertificate"].as_str().unwrap_or_default())
                    .with_context(|| format!("cannot write {}", ca.display()))?;
            }
            eprintln!("wrote {} for {}", cert_file.display(), v["identities"]);
        }
    }
    Ok(())
}

fn write_private(path: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    crate::private_files::write(path, pem, 0o600)
        .with_context(|| format!("cannot write {}", path.display()))
}
