//! The rule set of `install transparent-proxy`, as iptables-restore input:
//! Kuma's chains and rules (pkg/transparentproxy), each rule commented so
//! that uninstall finds exactly ours.

use std::fmt::Write;
use std::net::IpAddr;

pub const CHAIN_PREFIX: &str = "KUMA_MESH";
pub const COMMENT_PREFIX: &str = "kuma/mesh/transparent/proxy/";
pub const INBOUND: &str = "KUMA_MESH_INBOUND";
pub const INBOUND_REDIRECT: &str = "KUMA_MESH_INBOUND_REDIRECT";
pub const OUTBOUND: &str = "KUMA_MESH_OUTBOUND";
pub const OUTBOUND_REDIRECT: &str = "KUMA_MESH_OUTBOUND_REDIRECT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    /// The source the proxy uses toward the local application.
    fn passthrough_source(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.6/32",
            Family::V6 => "::6/128",
        }
    }

    pub fn holds(self, ip: &IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

/// A port or an inclusive range, as iptables writes it (`8080`, `8000:8100`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports(pub u16, pub u16);

impl std::fmt::Display for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == self.1 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{}:{}", self.0, self.1)
        }
    }
}

/// An address or a network, with the family it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub ip: IpAddr,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleConfig {
    pub redirect_inbound: bool,
    pub inbound_port: u16,
    pub outbound_port: u16,
    /// DNS redirect: to the resolv.conf nameservers only, or all UDP/53.
    pub redirect_dns: bool,
    pub redirect_all_dns: bool,
    pub dns_port: u16,
    pub nameservers: Vec<IpAddr>,
    pub uid: u32,
    pub exclude_inbound_ports: Vec<Ports>,
    pub exclude_outbound_ports: Vec<Ports>,
    pub exclude_inbound_ips: Vec<Net>,
    pub exclude_outbound_ips: Vec<Net>,
}

struct Table {
    name: &'static str,
    chains: Vec<&'static str>,
    rules: Vec<String>,
}

impl Table {
    fn new(name: &'static str) -> Table {
        Table {
            name,
            chains: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// `-A <chain> <spec> -m comment --comment <prefix><what> -j <target>`.
    fn rule(&mut self, chain: &str, spec: &str, what: &str, target: &str) {
        let mut r = format!("-A {chain} ");
        if !spec.is_empty() {
            r.push_str(spec);
            r.push(' ');
        }
        let _ = write!(r, "-m comment --comment {COMMENT_PREFIX}{what} -j {target}");
        self.rules.push(r);
    }
}

impl RuleConfig {
    fn dns_servers(&self, family: Family) -> Vec<&IpAddr> {
        self.nameservers
            .iter()
            .filter(|ip| family.holds(ip))
            .collect()
    }

    /// Whether DNS rules apply to `family` (there is something to redirect).
    fn dns_on(&self, family: Family) -> bool {
        self.redirect_dns && (self.redirect_all_dns || !self.dns_servers(family).is_empty())
    }

    fn raw(&self, family: Family) -> Option<Table> {
        if !self.dns_on(family) {
            return None;
        }
        // Conntrack zones keep the proxy's own queries (zone 1) apart from
        // the applications' redirected ones (zone 2), so that replies are
        // not mixed up between the two NAT mappings.
        let mut t = Table::new("raw");
        let uid = self.uid;
        t.rule(
            "OUTPUT",
            &format!("-p udp -m udp --dport 53 -m owner --uid-owner {uid}"),
            "dns/proxy-queries",
            "CT --zone 1",
        );
        let sport = self.dns_port;
        t.rule(
            "OUTPUT",
            &format!("-p udp -m udp --sport {sport} -m owner --uid-owner {uid}"),
            "dns/proxy-answers",
            "CT --zone 2",
        );
        if self.redirect_all_dns {
            t.rule(
                "OUTPUT",
                "-p udp -m udp --dport 53",
                "dns/app-queries",
                "CT --zone 2",
            );
            t.rule(
                "PREROUTING",
                "-p udp -m udp --sport 53",
                "dns/upstream-answers",
                "CT --zone 1",
            );
        } else {
            for ns in self.dns_servers(family) {
                t.rule(
                    "OUTPUT",
                    &format!("-d {ns} -p udp -m udp --dport 53"),
                    "dns/app-queries",
                    "CT --zone 2",
                );
                t.rule(
                    "PREROUTING",
                    &format!("-s {ns} -p udp -m udp --sport 53"),
                    "dns/upstream-answers",
                    "CT --zone 1",
                );
            }
        }
        Some(t)
    }

    fn nat(&self, family: Family) -> Table {
        let mut t = Table::new("nat");
        t.chains = vec![INBOUND, INBOUND_REDIRECT, OUTBOUND, OUTBOUND_REDIRECT];
        let uid = self.uid;
        if self.redirect_inbound {
            t.rule("PREROUTING", "-p tcp", "inbound", INBOUND);
        }
        for net in self
            .exclude_outbound_ips
            .iter()
            .filter(|n| family.holds(&n.ip))
        {
            t.rule(
                "OUTPUT",
                &format!("-d {}", net.text),
                "outbound/excluded-ip",
                "RETURN",
            );
        }
        if self.dns_on(family) {
            t.rule(
                "OUTPUT",
                &format!("-p udp -m udp --dport 53 -m owner --uid-owner {uid}"),
                "dns/proxy-queries",
                "RETURN",
            );
            let to = format!("REDIRECT --to-ports {}", self.dns_port);
            if self.redirect_all_dns {
                t.rule("OUTPUT", "-p udp -m udp --dport 53", "dns/redirect", &to);
            } else {
                for ns in self.dns_servers(family) {
                    t.rule(
                        "OUTPUT",
                        &format!("-d {ns} -p udp -m udp --dport 53"),
                        "dns/redirect",
                        &to,
                    );
                }
            }
        }
        t.rule("OUTPUT", "-p tcp", "outbound", OUTBOUND);

        for net in self
            .exclude_inbound_ips
            .iter()
            .filter(|n| family.holds(&n.ip))
        {
            t.rule(
                INBOUND,
                &format!("-s {}", net.text),
                "inbound/excluded-ip",
                "RETURN",
            );
        }
        for p in &self.exclude_inbound_ports {
            t.rule(
                INBOUND,
                &format!("-p tcp -m tcp --dport {p}"),
                "inbound/excluded-port",
                "RETURN",
            );
        }
        t.rule(INBOUND, "-p tcp", "inbound/redirect", INBOUND_REDIRECT);
        let to = format!("REDIRECT --to-ports {}", self.inbound_port);
        t.rule(INBOUND_REDIRECT, "-p tcp", "inbound/to-proxy", &to);

        if self.dns_on(family) {
            // Applications' DNS over TCP goes to the nameserver untouched.
            t.rule(
                OUTBOUND,
                &format!("-p tcp -m tcp --dport 53 -m owner ! --uid-owner {uid}"),
                "dns/app-tcp",
                "RETURN",
            );
        }
        for p in &self.exclude_outbound_ports {
            t.rule(
                OUTBOUND,
                &format!("-p tcp -m tcp --dport {p}"),
                "outbound/excluded-port",
                "RETURN",
            );
        }
        let lo = family.loopback();
        t.rule(
            OUTBOUND,
            &format!("-s {} -o lo", family.passthrough_source()),
            "outbound/proxy-to-app",
            "RETURN",
        );
        if self.redirect_inbound {
            t.rule(
                OUTBOUND,
                &format!("! -d {lo} -o lo -p tcp -m owner --uid-owner {uid}"),
                "outbound/proxy-to-own-address",
                INBOUND_REDIRECT,
            );
        }
        t.rule(
            OUTBOUND,
            &format!("-o lo -p tcp -m owner ! --uid-owner {uid}"),
            "outbound/app-to-loopback",
            "RETURN",
        );
        t.rule(
            OUTBOUND,
            &format!("-m owner --uid-owner {uid}"),
            "outbound/proxy-own-traffic",
            "RETURN",
        );
        t.rule(OUTBOUND, &format!("-d {lo}"), "outbound/loopback", "RETURN");
        t.rule(OUTBOUND, "", "outbound/redirect", OUTBOUND_REDIRECT);
        let to = format!("REDIRECT --to-ports {}", self.outbound_port);
        t.rule(OUTBOUND_REDIRECT, "-p tcp", "outbound/to-proxy", &to);
        t
    }

    /// The iptables-restore input for `family`. `removal` lines (from
    /// [`super::removal`]) go first in each table, so that installing over
    /// an earlier install replaces it in the same transaction.
    pub fn restore_input(&self, family: Family, removal: &super::removal::Removal) -> String {
        let mut out = String::new();
        let tables: Vec<Table> = self
            .raw(family)
            .into_iter()
            .chain([self.nat(family)])
            .collect();
        let mut names: Vec<&str> = tables.iter().map(|t| t.name).collect();
        for t in removal.tables() {
            if !names.contains(&t) {
                names.push(t);
            }
        }
        for name in names {
            match tables.iter().find(|t| t.name == name) {
                Some(t) => removal.write_table(&mut out, name, &t.chains, &t.rules),
                None => removal.write_table(&mut out, name, &[], &[]),
            }
        }
        out
    }
}
