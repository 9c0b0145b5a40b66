//! MeshAccessLog: one record per request (HTTP) or connection (TCP),
//! captured on the data path as plain values and handed to each sink's
//! bounded queue; rendering and writing happen on the sink's side. A sink
//! that is slow, full or unreachable drops records (and counts them): it
//! never makes traffic wait.

mod otlp;
mod record;
mod render;
mod sink;

use std::sync::Arc;

use http::HeaderName;
use koguma_types::log_format::{Operator, Piece};

use crate::config::LogFormat;
pub use record::{
    ConnectionOutcome, Downstream, HttpRecord, LogRecord, PendingLog, Received, UpstreamSlot,
};
pub use sink::{Sink, reopen_files};

/// What one listener logs: each sink with the format of its lines.
pub struct ListenerLog {
    pub entries: Vec<(Arc<Sink>, LogFormat)>,
    /// The request and response headers its formats name: what a record
    /// carries, in this order.
    pub req_headers: Vec<HeaderName>,
    pub resp_headers: Vec<HeaderName>,
    /// `%UPSTREAM_CLUSTER%`.
    pub cluster: Arc<str>,
}

impl ListenerLog {
    pub fn new(entries: Vec<(Arc<Sink>, LogFormat)>, cluster: &str) -> ListenerLog {
        let mut req_headers = Vec::new();
        let mut resp_headers = Vec::new();
        for (_, format) in &entries {
            for piece in format.pieces() {
                let (list, h) = match piece {
                    Piece::Op(Operator::Req(h)) => (&mut req_headers, h),
                    Piece::Op(Operator::Resp(h)) => (&mut resp_headers, h),
                    _ => continue,
                };
                for name in std::iter::once(&h.name).chain(&h.alternative) {
                    if name.starts_with(':') {
                        continue; // pseudo-headers are the record's own fields
                    }
                    if let Ok(n) = HeaderName::from_bytes(name.as_bytes())
                        && !list.contains(&n)
                    {
                        list.push(n);
                    }
                }
            }
        }
        ListenerLog {
            entries,
            req_headers,
            resp_headers,
            cluster: Arc::from(cluster),
        }
    }

    /// Hands `record` to every sink.
    pub fn emit(self: &Arc<Self>, record: LogRecord) {
        let record = Arc::new(record);
        for (i, (sink, _)) in self.entries.iter().enumerate() {
            sink.send(LogItem {
                log: self.clone(),
                entry: i,
                record: record.clone(),
            });
        }
    }
}

/// One record on its way to one sink.
pub struct LogItem {
    log: Arc<ListenerLog>,
    entry: usize,
    record: Arc<LogRecord>,
}

impl LogItem {
    fn format(&self) -> &LogFormat {
        &self.log.entries[self.entry].1
    }
}
