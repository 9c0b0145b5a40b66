//! The DNS server's life inside the agent: started with the first config
//! that turns transparent proxying on (so that a port conflict is refused
//! like any config the agent cannot run), fed the names of every config.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use koguma_dns::{DnsRecord, DnsServer, DnsStats};
use koguma_proto::v1 as pb;

pub struct DnsSettings {
    pub enabled: bool,
    pub port: u16,
    pub resolv_conf: PathBuf,
}

pub struct DnsProxy {
    settings: DnsSettings,
    server: ArcSwapOption<DnsServer>,
    pub stats: Arc<DnsStats>,
}

impl DnsProxy {
    pub fn new(settings: DnsSettings) -> DnsProxy {
        DnsProxy {
            settings,
            server: ArcSwapOption::empty(),
            stats: Arc::new(DnsStats::default()),
        }
    }

    /// The records of `config`, checked; `None` when it has no transparent
    /// proxy (no names are served then, as in Kuma).
    pub fn records(config: &pb::ProxyConfig) -> Result<Option<Vec<DnsRecord>>, String> {
        if config.transparent_proxy.is_none() {
            return Ok(None);
        }
        config
            .dns_records
            .iter()
            .map(|r| {
                let ips = r
                    .ips
                    .iter()
                    .map(|ip| {
                        ip.parse::<IpAddr>().map_err(|_| {
                            format!("dns record {:?}: {ip:?} is not an IP address", r.name)
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(DnsRecord {
                    name: r.name.clone(),
                    ips,
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Some)
    }

    /// Starts the server if it is not running yet and should be.
    pub async fn ensure_started(&self, ipv6: bool) -> Result<(), String> {
        if !self.settings.enabled || self.server.load().is_some() {
            return Ok(());
        }
        let mut listen = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, self.settings.port))];
        if ipv6 {
            listen.push(SocketAddr::from((Ipv6Addr::LOCALHOST, self.settings.port)));
        }
        let server = DnsServer::start(&listen, &self.settings.resolv_conf, self.stats.clone())
            .await
            .map_err(|e| e.to_string())?;
        self.server.store(Some(Arc::new(server)));
        Ok(())
    }

    pub fn set_records(&self, records: &[DnsRecord]) {
        if let Some(server) = self.server.load().as_ref() {
            server.set_records(records);
        }
    }

    /// Names served, when the server runs.
    pub fn entries(&self) -> Option<i64> {
        self.server
            .load()
            .as_ref()
            .map(|_| self.stats.entries.get())
    }
}
