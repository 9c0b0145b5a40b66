//! The DNS server inside koguma-dp (Kuma's embedded DNS proxy): `A` and
//! `AAAA` for the `.mesh` names the control plane sends, answered from
//! memory with a 30 s TTL; every other query is relayed as it came to the
//! host's first nameserver, and a failing upstream gets SERVFAIL.

mod resolv_conf;
mod server;
mod stats;
mod table;
mod upstream;

pub use resolv_conf::{ResolvConfError, first_nameserver, nameservers};
pub use server::{DnsError, DnsServer};
pub use stats::DnsStats;
pub use table::{DnsRecord, DnsTable, TTL};
