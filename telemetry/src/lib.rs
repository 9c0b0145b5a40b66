//! How Koguma's binaries report on themselves. Both `koguma-cp` and
//! `koguma-dp` log the same way: `tracing` to stderr, at `--log-level`
//! unless RUST_LOG says otherwise, with colours only on a terminal.

pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init_logging(level: &str) {
    // hickory-server logs every DNS query at info: the DNS server's own
    // metrics count them instead.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},hickory_server=warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
