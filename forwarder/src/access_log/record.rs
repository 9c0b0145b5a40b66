//! What a record holds: values copied off the request or connection (the
//! headers its formats name, cloned handles rather than text), finished
//! when the response body ends or the connection closes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method, Uri, Version};

use super::ListenerLog;
use crate::authz::Peer;

/// The downstream connection a request or connection came on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Downstream {
    pub remote: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub id: u64,
}

impl Downstream {
    pub fn new(remote: Option<SocketAddr>, local: Option<SocketAddr>) -> Downstream {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Downstream {
            remote,
            local,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.remote.map(|a| a.ip())
    }
}

/// How many request body bytes came from the downstream: known once the
/// body was read whole, else counted as it streams.
#[derive(Clone)]
pub enum Received {
    Whole(u64),
    Streaming(Arc<crate::stream_body::RequestProgress>),
}

impl Received {
    fn bytes(&self) -> u64 {
        match self {
            Received::Whole(n) => *n,
            Received::Streaming(p) => p.bytes(),
        }
    }
}

/// The endpoint a request's last try went to.
#[derive(Default)]
pub struct UpstreamSlot(Mutex<Option<SocketAddr>>);

impl UpstreamSlot {
    pub fn set(&self, addr: SocketAddr) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    pub fn get(&self) -> Option<SocketAddr> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct LogRecord {
    pub start: SystemTime,
    pub duration: Duration,
    /// Until the response's first byte (HTTP).
    pub response_duration: Option<Duration>,
    pub downstream: Downstream,
    pub upstream: Option<SocketAddr>,
    /// The caller's URI SANs (mesh mTLS).
    pub peer_uris: Vec<String>,
    pub sni: Option<String>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Envoy's response flags ("UF", "UH", ...), "-" for none.
    pub flags: &'static str,
    pub details: &'static str,
    pub failure: Option<String>,
    pub http: Option<HttpRecord>,
}

pub struct HttpRecord {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub authority: Option<HeaderValue>,
    pub status: u16,
    /// The values of the listener's `req_headers` and `resp_headers`.
    pub req: Vec<Option<HeaderValue>>,
    pub resp: Vec<Option<HeaderValue>>,
}

impl LogRecord {
    /// A record of a TCP connection (or one that never became a request).
    pub fn connection(
        downstream: Downstream,
        peer: &Peer,
        started: (SystemTime, Instant),
    ) -> LogRecord {
        let (peer_uris, sni) = peer_parts(peer);
        LogRecord {
            start: started.0,
            duration: started.1.elapsed(),
            response_duration: None,
            downstream,
            upstream: None,
            peer_uris,
            sni,
            bytes_received: 0,
            bytes_sent: 0,
            flags: "-",
            details: "-",
            failure: None,
            http: None,
        }
    }
}

/// How a TCP connection ended: where it went and the bytes each way
/// (received, sent), or Envoy's response flag and why it went nowhere.
pub type ConnectionOutcome = Result<(SocketAddr, u64, u64), (&'static str, String)>;

impl LogRecord {
    /// The record of a TCP connection that has ended.
    pub fn closed(
        downstream: Downstream,
        peer: &Peer,
        started: (SystemTime, Instant),
        outcome: ConnectionOutcome,
    ) -> LogRecord {
        let mut r = LogRecord::connection(downstream, peer, started);
        match outcome {
            Ok((upstream, received, sent)) => {
                r.upstream = Some(upstream);
                (r.bytes_received, r.bytes_sent) = (received, sent);
            }
            Err((flags, why)) => {
                r.flags = flags;
                r.failure = Some(why);
            }
        }
        r
    }
}

fn peer_parts(peer: &Peer) -> (Vec<String>, Option<String>) {
    match peer {
        Peer::Mesh { uris, sni, .. } => (uris.clone(), sni.clone()),
        Peer::Unauthenticated => (Vec::new(), None),
    }
}

fn values(headers: &HeaderMap, names: &[http::HeaderName]) -> Vec<Option<HeaderValue>> {
    names.iter().map(|n| headers.get(n).cloned()).collect()
}

/// A request's record from its head until its response body ends.
pub struct PendingLog {
    log: Arc<ListenerLog>,
    started: Instant,
    /// Taken when the record is handed to the sinks.
    record: Option<LogRecord>,
    /// The request body, as far as it was read.
    received: Option<Received>,
}

impl PendingLog {
    pub fn begin<B>(
        log: Arc<ListenerLog>,
        req: &http::Request<B>,
        peer: &Peer,
        downstream: Downstream,
    ) -> PendingLog {
        let started = Instant::now();
        let mut record = LogRecord::connection(downstream, peer, (SystemTime::now(), started));
        record.http = Some(HttpRecord {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            authority: req.headers().get(http::header::HOST).cloned().or_else(|| {
                req.uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            }),
            status: 0,
            req: values(req.headers(), &log.req_headers),
            resp: Vec::new(),
        });
        PendingLog {
            log,
            started,
            record: Some(record),
            received: None,
        }
    }

    /// The response's head is known.
    pub fn respond<B>(
        &mut self,
        resp: &http::Response<B>,
        flags: &'static str,
        details: &'static str,
        upstream: Option<SocketAddr>,
        received: Option<Received>,
    ) {
        self.received = received;
        let Some(record) = &mut self.record else {
            return;
        };
        record.response_duration = Some(self.started.elapsed());
        record.flags = flags;
        record.details = details;
        record.upstream = upstream;
        if let Some(h) = &mut record.http {
            h.status = resp.status().as_u16();
            h.resp = values(resp.headers(), &self.log.resp_headers);
        }
    }

    pub fn sent(&mut self, n: usize) {
        if let Some(r) = &mut self.record {
            r.bytes_sent += n as u64;
        }
    }
}

impl Drop for PendingLog {
    /// The response body ended, or the caller went away: the record is
    /// complete either way.
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.duration = self.started.elapsed();
            record.bytes_received = self.received.as_ref().map_or(0, Received::bytes);
            self.log.emit(record);
        }
    }
}
