//! OTLP/gRPC logs export (`opentelemetry.proto.collector.logs.v1.
//! LogsService/Export`): records batched for up to a second (or 512 of
//! them), as Envoy's OpenTelemetry access logger does. The messages are
//! the OTLP protocol's own, field for field, for the parts Koguma fills.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::{LogItem, render};
use crate::config::LogFormat;
use crate::stats::SinkStats;

const BATCH: usize = 512;
const FLUSH: Duration = Duration::from_secs(1);
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportLogsServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_logs: Vec<ResourceLogs>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportLogsServiceResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceLogs {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_logs: Vec<ScopeLogs>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeLogs {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub log_records: Vec<LogRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LogRecord {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(message, optional, tag = "5")]
    pub body: Option<AnyValue>,
    #[prost(message, repeated, tag = "6")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "11")]
    pub observed_time_unix_nano: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// Only its string form is sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(string, tag = "1")]
    pub string_value: String,
}

fn string(s: String) -> Option<AnyValue> {
    Some(AnyValue { string_value: s })
}

fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn record(item: &LogItem) -> LogRecord {
    let (body, attributes) = match item.format() {
        LogFormat::Otel { body, attributes } => (body.as_slice(), attributes.as_slice()),
        // Not made by the agent for an OTLP sink; rendered as a line.
        _ => (&[][..], &[][..]),
    };
    let mut text = String::new();
    render::text(body, &item.log, &item.record, &mut text);
    let attributes = attributes
        .iter()
        .map(|(key, pieces)| {
            let mut v = String::new();
            render::text(pieces, &item.log, &item.record, &mut v);
            KeyValue {
                key: key.clone(),
                value: string(v),
            }
        })
        .collect();
    LogRecord {
        time_unix_nano: nanos(item.record.start),
        observed_time_unix_nano: nanos(std::time::SystemTime::now()),
        body: string(text),
        attributes,
    }
}

pub async fn export(
    endpoint: String,
    resource: Vec<(String, String)>,
    mut rx: mpsc::Receiver<LogItem>,
    stats: Arc<SinkStats>,
) {
    let channel = match tonic::transport::Endpoint::from_shared(format!("http://{endpoint}")) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy(),
        Err(e) => {
            tracing::warn!(%endpoint, error = %e, "access log: not an OTLP endpoint; its records are dropped");
            while let Some(_item) = rx.recv().await {
                stats.dropped.inc();
            }
            return;
        }
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    let resource = Resource {
        attributes: resource
            .into_iter()
            .map(|(key, v)| KeyValue {
                key,
                value: string(v),
            })
            .collect(),
    };
    let mut batch: Vec<LogItem> = Vec::with_capacity(BATCH);
    loop {
        // The first record opens a batch; it is sent a second later, or
        // when full.
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + FLUSH;
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let n = batch.len() as u64;
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "koguma".into(),
                    }),
                    log_records: batch.drain(..).map(|i| record(&i)).collect(),
                }],
            }],
        };
        let sent = async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
            let codec: tonic_prost::ProstCodec<
                ExportLogsServiceRequest,
                ExportLogsServiceResponse,
            > = tonic_prost::ProstCodec::default();
            grpc.unary(tonic::Request::new(request), path, codec).await
        };
        match sent.await {
            Ok(_) => stats.written.add(n),
            Err(status) => {
                stats.dropped.add(n);
                tracing::warn!(%endpoint, error = %status, "access log: OTLP export failed");
            }
        }
    }
}
