//! The names this dataplane answers itself, as one immutable snapshot per
//! config: a lookup is one hash probe, and a new config swaps the whole
//! table in.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Kuma's answer TTL: short, so that caches do not outlive a VIP change.
pub const TTL: u32 = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    pub name: String,
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Default)]
pub struct DnsTable {
    /// Lowercase, without the trailing dot.
    names: HashMap<String, Addresses>,
}

#[derive(Debug, Default, Clone)]
pub struct Addresses {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

impl DnsTable {
    pub fn new(records: &[DnsRecord]) -> DnsTable {
        let mut names: HashMap<String, Addresses> = HashMap::new();
        for r in records {
            let entry = names.entry(normalize(&r.name)).or_default();
            for ip in &r.ips {
                match ip {
                    IpAddr::V4(v4) => entry.v4.push(*v4),
                    IpAddr::V6(v6) => entry.v6.push(*v6),
                }
            }
        }
        DnsTable { names }
    }

    /// The addresses of `name` (any case, with or without the final dot),
    /// if it is one of ours.
    pub fn lookup(&self, name: &str) -> Option<&Addresses> {
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.names.get(&trimmed.to_ascii_lowercase());
        }
        self.names.get(trimmed)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case_and_the_final_dot() {
        let t = DnsTable::new(&[DnsRecord {
            name: "backend.mesh".into(),
            ips: vec![
                "240.0.0.1".parse().unwrap(),
                "::ffff:240.0.0.1".parse().unwrap(),
            ],
        }]);
        let a = t.lookup("Backend.MESH.").unwrap();
        assert_eq!(a.v4, [Ipv4Addr::new(240, 0, 0, 1)]);
        assert_eq!(a.v6, [Ipv4Addr::new(240, 0, 0, 1).to_ipv6_mapped()]);
        assert!(t.lookup("backend.mesh.example.com").is_none());
        assert!(t.lookup("web.mesh").is_none());
    }
}
