//! Where queries that are not ours go: the first `nameserver` of
//! resolv.conf, as Kuma's DNS proxy does.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ResolvConfError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} names no nameserver: queries for names outside the mesh cannot be answered")]
    NoNameserver { path: String },
}

pub fn first_nameserver(path: &Path) -> Result<SocketAddr, ResolvConfError> {
    nameservers(path)?
        .first()
        .map(|ip| SocketAddr::new(*ip, 53))
        .ok_or_else(|| ResolvConfError::NoNameserver {
            path: path.display().to_string(),
        })
}

/// Every usable `nameserver` of the file, in order.
pub fn nameservers(path: &Path) -> Result<Vec<IpAddr>, ResolvConfError> {
    let text = std::fs::read_to_string(path).map_err(|source| ResolvConfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(parse(&text))
}

fn parse(text: &str) -> Vec<IpAddr> {
    text.lines()
        .map(|l| l.split(['#', ';']).next().unwrap_or_default())
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        // A zone index (fe80::1%eth0) is not ours to honour: skip such lines.
        .filter_map(|addr| addr.parse::<IpAddr>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_usable_nameserver() {
        let text = "# generated\nsearch example.com\nnameserver fe80::1%eth0\nnameserver 10.0.0.53 # main\nnameserver 10.0.0.54\n";
        let want: Vec<IpAddr> = vec!["10.0.0.53".parse().unwrap(), "10.0.0.54".parse().unwrap()];
        assert_eq!(parse(text), want);
        assert!(parse("search x\n").is_empty());
        assert_eq!(
            parse("nameserver ::1\n"),
            ["::1".parse::<IpAddr>().unwrap()]
        );
    }
}
