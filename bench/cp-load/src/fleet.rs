//! N config streams, each on its own TLS connection as a koguma-dp has:
//! the node on the first request, a CSR when asked, an ACK for every
//! response, and the arrival time and size of every response recorded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use koguma_proto::v1::dataplane_discovery_client::DataplaneDiscoveryClient;
use koguma_proto::v1::{ConfigRequest, Node};
use prost::Message;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// What every stream received: (arrival, encoded bytes) per response.
#[derive(Default)]
pub struct Log {
    streams: Vec<Mutex<Vec<(Instant, usize)>>>,
    pub configured: AtomicUsize,
    pub closed: AtomicUsize,
    pub errors: Mutex<Vec<String>>,
}

impl Log {
    fn record(&self, i: usize, bytes: usize) {
        let mut s = self.streams[i].lock().unwrap_or_else(|p| p.into_inner());
        if s.is_empty() {
            self.configured.fetch_add(1, Ordering::Relaxed);
        }
        s.push((Instant::now(), bytes));
    }

    /// How many responses each stream has received so far.
    pub fn counts(&self) -> Vec<usize> {
        self.streams
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .collect()
    }

    /// The responses stream `i` received after the first `skip`.
    pub fn since(&self, i: usize, skip: usize) -> Vec<(Instant, usize)> {
        let s = self.streams[i].lock().unwrap_or_else(|p| p.into_inner());
        s.get(skip..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// The latest arrival on any stream.
    pub fn last_arrival(&self) -> Option<Instant> {
        self.streams
            .iter()
            .filter_map(|s| {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .last()
                    .map(|e| e.0)
            })
            .max()
    }
}

pub struct Target {
    pub cp_url: String,
    pub ca_pem: Vec<u8>,
    pub mesh: String,
}

/// Opens one stream per name, at most `concurrency` connecting at once.
pub async fn open(
    target: Target,
    names: Vec<String>,
    csr: bool,
    concurrency: usize,
) -> anyhow::Result<Arc<Log>> {
    let log = Arc::new(Log {
        streams: names.iter().map(|_| Mutex::new(Vec::new())).collect(),
        ..Log::default()
    });
    let endpoint = Endpoint::from_shared(target.cp_url.clone())?.tls_config(
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&target.ca_pem))
            .domain_name("localhost"),
    )?;
    let gate = Arc::new(Semaphore::new(concurrency));
    for (i, name) in names.into_iter().enumerate() {
        let csr = if csr { new_csr()? } else { Vec::new() };
        let permit = gate.clone().acquire_owned().await?;
        let (endpoint, log, mesh) = (endpoint.clone(), log.clone(), target.mesh.clone());
        tokio::spawn(async move {
            if let Err(e) = stream(i, endpoint, mesh, name, csr, &log, permit).await {
                log.errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e.to_string());
            }
            log.closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    Ok(log)
}

fn new_csr() -> anyhow::Result<Vec<u8>> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    Ok(rcgen::CertificateParams::default()
        .serialize_request(&pair)?
        .der()
        .to_vec())
}

async fn stream(
    i: usize,
    endpoint: Endpoint,
    mesh: String,
    name: String,
    csr: Vec<u8>,
    log: &Log,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> anyhow::Result<()> {
    let channel = endpoint.connect().await?;
    let mut client =
        DataplaneDiscoveryClient::new(channel).max_decoding_message_size(256 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(4);
    tx.send(ConfigRequest {
        node: Some(Node {
            mesh,
            name,
            agent_version: "koguma-cp-load".into(),
            ..Node::default()
        }),
        csr,
        ..ConfigRequest::default()
    })
    .await?;
    let mut responses = client
        .stream_config(ReceiverStream::new(rx))
        .await?
        .into_inner();
    drop(permit);
    while let Some(response) = responses.message().await? {
        log.record(i, response.encoded_len());
        tx.send(ConfigRequest {
            version_info: response.version_info,
            response_nonce: response.nonce,
            ..ConfigRequest::default()
        })
        .await?;
    }
    anyhow::bail!("the CP ended the stream")
}
