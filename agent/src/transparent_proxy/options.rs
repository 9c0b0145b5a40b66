//! The flags of `install`/`uninstall transparent-proxy`, as kumactl names
//! them, and their checking: a bad value is refused naming the flag,
//! before anything changes.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};

use super::iptables::Backend;
use super::rules::{Net, Ports, RuleConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IpFamilyMode {
    Dualstack,
    Ipv4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The back end that already holds rules, else nf_tables.
    Auto,
    Nft,
    Legacy,
}

fn backend(choice: BackendChoice) -> Option<Backend> {
    match choice {
        BackendChoice::Auto => None,
        BackendChoice::Nft => Some(Backend::Nft),
        BackendChoice::Legacy => Some(Backend::Legacy),
    }
}

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    #[arg(long, default_value_t = 15006)]
    redirect_inbound_port: u16,
    #[arg(long, default_value_t = 15001)]
    redirect_outbound_port: u16,
    /// Redirect inbound traffic (`--redirect-inbound=false` for gateways).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    redirect_inbound: bool,
    /// Redirect DNS queries to the resolv.conf nameservers to the proxy's DNS server.
    #[arg(long)]
    redirect_dns: bool,
    /// Redirect every UDP/53 query, whatever its destination.
    #[arg(long)]
    redirect_all_dns_traffic: bool,
    #[arg(long, default_value_t = 15053)]
    redirect_dns_port: u16,
    /// The user koguma-dp runs as (name or UID); its traffic is never redirected.
    #[arg(long, default_value = "5678")]
    kuma_dp_user: String,
    /// Comma-separated ports or ranges (8000-8100) left alone.
    #[arg(long, value_delimiter = ',')]
    exclude_inbound_ports: Vec<String>,
    /// Comma-separated destination ports or ranges never redirected.
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_ports: Vec<String>,
    /// Comma-separated addresses or networks (10.0.0.0/8) left alone.
    #[arg(long, value_delimiter = ',')]
    exclude_inbound_ips: Vec<String>,
    /// Comma-separated destination addresses or networks never redirected.
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_ips: Vec<String>,
    /// IPv4 only, or IPv6 too (skipped on hosts without IPv6).
    #[arg(long, value_enum, default_value_t = IpFamilyMode::Dualstack)]
    ip_family_mode: IpFamilyMode,
    /// Which iptables holds the rules.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    iptables_backend: BackendChoice,
    /// Where --redirect-dns finds the nameservers whose queries it redirects.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Print the rules and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the rules as they are applied.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    /// Which iptables holds the rules.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    iptables_backend: BackendChoice,
    /// Print what would be removed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the removal as it is applied.
    #[arg(long)]
    pub verbose: bool,
}

impl UninstallArgs {
    pub fn backend(&self) -> Option<Backend> {
        backend(self.iptables_backend)
    }
}

fn ports(flag: &str, values: &[String]) -> anyhow::Result<Vec<Ports>> {
    values
        .iter()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            let bad = || {
                anyhow::anyhow!(
                    "--{flag}: {v:?} is not a port (1-65535) or a range of ports (8000-8100)"
                )
            };
            let port = |s: &str| {
                s.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(bad)
            };
            match v.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        return Err(bad());
                    }
                    Ok(Ports(a, b))
                }
                None => port(v).map(|p| Ports(p, p)),
            }
        })
        .collect()
}

fn nets(flag: &str, values: &[String]) -> anyhow::Result<Vec<Net>> {
    values
        .iter()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            let v = v.trim();
            let bad =
                || anyhow::anyhow!("--{flag}: {v:?} is not an IP address or network (10.0.0.0/8)");
            let (ip, prefix) = match v.split_once('/') {
                Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| bad())?)),
                None => (v, None),
            };
            let ip: IpAddr = ip.parse().map_err(|_| bad())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if prefix.is_some_and(|p| p > max) {
                return Err(bad());
            }
            Ok(Net {
                ip,
                text: v.to_string(),
            })
        })
        .collect()
}

/// A UID, or a user name from the password database.
fn uid(user: &str) -> anyhow::Result<u32> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => bail!("--kuma-dp-user: no user named {user:?} on this host"),
        Err(e) => bail!("--kuma-dp-user: cannot look up {user:?}: {e}"),
    }
}

impl InstallArgs {
    pub fn backend(&self) -> Option<Backend> {
        backend(self.iptables_backend)
    }

    pub fn ipv6(&self) -> bool {
        self.ip_family_mode == IpFamilyMode::Dualstack
    }

    pub fn rule_config(&self) -> anyhow::Result<RuleConfig> {
        let named = [
            ("redirect-inbound-port", self.redirect_inbound_port),
            ("redirect-outbound-port", self.redirect_outbound_port),
            ("redirect-dns-port", self.redirect_dns_port),
        ];
        for (i, (flag, port)) in named.iter().enumerate() {
            if *port == 0 {
                bail!("--{flag}: 0 is not a port");
            }
            if let Some((other, _)) = named[..i].iter().find(|(_, p)| p == port) {
                bail!("--{flag}: port {port} is already --{other}");
            }
        }
        let redirect_dns = self.redirect_dns || self.redirect_all_dns_traffic;
        let nameservers = if redirect_dns && !self.redirect_all_dns_traffic {
            let found = koguma_dns::nameservers(&self.resolv_conf)
                .with_context(|| "--redirect-dns needs the nameservers of resolv.conf")?;
            if found.is_empty() {
                bail!(
                    "--redirect-dns: {} names no nameserver to redirect (use --redirect-all-dns-traffic)",
                    self.resolv_conf.display()
                );
            }
            found
        } else {
            Vec::new()
        };
        Ok(RuleConfig {
            redirect_inbound: self.redirect_inbound,
            inbound_port: self.redirect_inbound_port,
            outbound_port: self.redirect_outbound_port,
            redirect_dns,
            redirect_all_dns: self.redirect_all_dns_traffic,
            dns_port: self.redirect_dns_port,
            nameservers,
            uid: uid(&self.kuma_dp_user)?,
            exclude_inbound_ports: ports("exclude-inbound-ports", &self.exclude_inbound_ports)?,
            exclude_outbound_ports: ports("exclude-outbound-ports", &self.exclude_outbound_ports)?,
            exclude_inbound_ips: nets("exclude-inbound-ips", &self.exclude_inbound_ips)?,
            exclude_outbound_ips: nets("exclude-outbound-ips", &self.exclude_outbound_ips)?,
        })
    }
}
