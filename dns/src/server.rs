//! The request handler behind hickory-server's UDP and TCP listeners.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use tokio::net::{TcpListener, UdpSocket};

use crate::resolv_conf::{ResolvConfError, first_nameserver};
use crate::stats::{DnsStats, qtype_index, rcode_index};
use crate::table::{DnsRecord, DnsTable, TTL};
use crate::upstream::Upstream;

/// How long an upstream gets to answer before the client gets SERVFAIL.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle TCP clients are dropped after this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen on {addr} for DNS: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    ResolvConf(#[from] ResolvConfError),
}

/// The running server: the names it answers can be replaced at any time.
pub struct DnsServer {
    table: Arc<ArcSwap<DnsTable>>,
    stats: Arc<DnsStats>,
    listening: Vec<SocketAddr>,
    // Dropping the server stops its listeners.
    _server: Server<MeshDns>,
}

impl DnsServer {
    /// Listens on UDP and TCP at every address of `listen`, relaying
    /// outside names to the first nameserver of `resolv_conf`.
    pub async fn start(
        listen: &[SocketAddr],
        resolv_conf: &Path,
        stats: Arc<DnsStats>,
    ) -> Result<DnsServer, DnsError> {
        let upstream = first_nameserver(resolv_conf)?;
        let table = Arc::new(ArcSwap::from_pointee(DnsTable::default()));
        let mut server = Server::new(MeshDns {
            table: table.clone(),
            stats: stats.clone(),
            upstream: Upstream {
                addr: upstream,
                timeout: UPSTREAM_TIMEOUT,
            },
        });
        let mut sockets = Vec::new();
        for addr in listen {
            let bound = async {
                Ok::<_, std::io::Error>((
                    UdpSocket::bind(addr).await?,
                    TcpListener::bind(addr).await?,
                ))
            };
            match bound.await {
                Ok(s) => sockets.push(s),
                // A host without IPv6 still gets its IPv4 listeners.
                Err(e) if addr.is_ipv6() && e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                    tracing::info!(%addr, error = %e, "no IPv6 loopback: DNS on IPv4 only");
                }
                Err(source) => {
                    return Err(DnsError::Bind {
                        addr: *addr,
                        source,
                    });
                }
            }
        }
        let mut listening = Vec::new();
        for (udp, tcp) in sockets {
            listening.extend(udp.local_addr().ok());
            server.register_socket(udp);
            server.register_listener(tcp, TCP_TIMEOUT, 16);
        }
        tracing::info!(?listen, %upstream, "DNS server listening");
        Ok(DnsServer {
            table,
            stats,
            listening,
            _server: server,
        })
    }

    /// Replaces the names answered locally.
    pub fn set_records(&self, records: &[DnsRecord]) {
        let table = DnsTable::new(records);
        self.stats.entries.set(table.len() as i64);
        self.table.store(Arc::new(table));
    }

    /// Where it listens (UDP; TCP on the same addresses).
    pub fn listening(&self) -> &[SocketAddr] {
        &self.listening
    }
}

struct MeshDns {
    table: Arc<ArcSwap<DnsTable>>,
    stats: Arc<DnsStats>,
    upstream: Upstream,
}

#[async_trait::async_trait]
impl RequestHandler for MeshDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let info = self.answer(request, response).await;
        self.stats.request_time.observe(started.elapsed());
        self.stats.rcodes[rcode_index(u16::from(info.response_code))].inc();
        info
    }
}

impl MeshDns {
    async fn answer<R: ResponseHandler>(&self, request: &Request, response: R) -> ResponseInfo {
        let Some(query) = request.queries.queries().first() else {
            let reply = MessageResponseBuilder::from_message_request(request)
                .error_msg(&request.metadata, ResponseCode::FormErr);
            return send(response, reply, request).await;
        };
        let qtype = query.query_type();
        let qtype_idx = qtype_index(qtype);
        if request.metadata.op_code == OpCode::Query
            && matches!(qtype, RecordType::A | RecordType::AAAA)
        {
            let table = self.table.load();
            if let Some(addrs) = table.lookup(&query.name().to_string()) {
                self.stats.local[qtype_idx].inc();
                let name = Name::from(query.name().clone());
                let records: Vec<Record> = if qtype == RecordType::A {
                    addrs
                        .v4
                        .iter()
                        .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(*ip))))
                        .collect()
                } else {
                    addrs
                        .v6
                        .iter()
                        .map(|ip| Record::from_rdata(name.clone(), TTL, RData::AAAA(AAAA(*ip))))
                        .collect()
                };
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = true;
                metadata.recursion_available = true;
                let reply = MessageResponseBuilder::from_message_request(request).build(
                    metadata,
                    records.iter(),
                    [],
                    [],
                    [],
                );
                return send(response, reply, request).await;
            }
        }
        self.stats.upstream[qtype_idx].inc();
        let started = Instant::now();
        let relayed = self
            .upstream
            .exchange(request.as_slice(), request.protocol() == Protocol::Tcp)
            .await
            .map_err(|e| e.to_string())
            .and_then(|bytes| Message::from_vec(&bytes).map_err(|e| e.to_string()));
        self.stats.upstream_time.observe(started.elapsed());
        match relayed {
            Ok(msg) => {
                let mut builder = MessageResponseBuilder::from_message_request(request);
                if let Some(edns) = &msg.edns {
                    builder.edns(edns);
                }
                let reply = builder.build(
                    msg.metadata,
                    msg.answers.iter(),
                    msg.authorities.iter(),
                    [],
                    msg.additionals.iter(),
                );
                send(response, reply, request).await
            }
            Err(e) => {
                self.stats.upstream_failures.inc();
                tracing::info!(name = %query.name(), upstream = %self.upstream.addr, error = %e, "upstream DNS failed: SERVFAIL");
                let reply = MessageResponseBuilder::from_message_request(request)
                    .error_msg(&request.metadata, ResponseCode::ServFail);
                send(response, reply, request).await
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    mut response: R,
    reply: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match response.send_response(reply).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "cannot send a DNS response");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::op::{MessageType, Query};

    async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
        let mut q = Message::new(7, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(&q.to_vec().unwrap(), server).await.unwrap();
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    #[tokio::test]
    async fn answers_mesh_names_and_fails_closed_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        // Nothing listens there: the upstream fails at once.
        std::fs::write(&resolv, "nameserver 127.0.0.77\n").unwrap();
        let stats = Arc::new(DnsStats::default());
        let listen = [SocketAddr::from(([127, 0, 0, 1], 0))];
        let server = DnsServer::start(&listen, &resolv, stats.clone())
            .await
            .unwrap();
        server.set_records(&[DnsRecord {
            name: "backend_v1.mesh".into(),
            ips: vec![
                "240.0.0.3".parse().unwrap(),
                "::ffff:240.0.0.3".parse().unwrap(),
            ],
        }]);
        let addr = server.listening()[0];

        let a = ask(addr, "Backend_V1.mesh.", RecordType::A).await;
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.metadata.authoritative);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].ttl, TTL);
        assert_eq!(a.answers[0].data, RData::A(A("240.0.0.3".parse().unwrap())));
        let aaaa = ask(addr, "backend_v1.mesh.", RecordType::AAAA).await;
        assert_eq!(
            aaaa.answers[0].data,
            RData::AAAA(AAAA("::ffff:240.0.0.3".parse().unwrap()))
        );

        let out = ask(addr, "example.com.", RecordType::A).await;
        assert_eq!(out.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(stats.upstream_failures.get(), 1);
        assert_eq!(stats.local[0].get(), 1);
        assert_eq!(stats.local[1].get(), 1);
        assert_eq!(stats.entries.get(), 1);
        let mut text = String::new();
        stats.render(&mut text);
        assert!(
            text.contains("kuma_dp_dns_response_codes_total{rcode=\"SERVFAIL\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kuma_dp_dns_request_duration_seconds_count 3"),
            "{text}"
        );
    }
}
