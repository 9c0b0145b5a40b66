//! The DNS server's metrics, under the names Kuma's embedded DNS proxy
//! exports (`kuma_dp_dns_*`).

use std::fmt::Write;

use hickory_server::proto::rr::RecordType;
use koguma_telemetry::metrics::{Counter, Gauge, Histogram};

/// Query types counted on their own; the rest are "other".
const QTYPES: [&str; 3] = ["A", "AAAA", "other"];

#[derive(Default)]
pub struct DnsStats {
    /// By [`QTYPES`] index.
    pub local: [Counter; 3],
    pub upstream: [Counter; 3],
    pub upstream_failures: Counter,
    pub request_time: Histogram,
    pub upstream_time: Histogram,
    /// NOERROR, NXDOMAIN, SERVFAIL, other.
    pub rcodes: [Counter; 4],
    pub entries: Gauge,
}

pub fn qtype_index(qtype: RecordType) -> usize {
    match qtype {
        RecordType::A => 0,
        RecordType::AAAA => 1,
        _ => 2,
    }
}

pub fn rcode_index(rcode: u16) -> usize {
    match rcode {
        0 => 0,
        3 => 1,
        2 => 2,
        _ => 3,
    }
}

impl DnsStats {
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# TYPE kuma_dp_dns_queries_total counter");
        for (source, counters) in [("local", &self.local), ("upstream", &self.upstream)] {
            for (qtype, c) in QTYPES.iter().zip(counters) {
                let _ = writeln!(
                    out,
                    "kuma_dp_dns_queries_total{{qtype=\"{qtype}\",source=\"{source}\"}} {}",
                    c.get()
                );
            }
        }
        let _ = writeln!(out, "# TYPE kuma_dp_dns_response_codes_total counter");
        for (rcode, c) in ["NOERROR", "NXDOMAIN", "SERVFAIL", "other"]
            .iter()
            .zip(&self.rcodes)
        {
            let _ = writeln!(
                out,
                "kuma_dp_dns_response_codes_total{{rcode=\"{rcode}\"}} {}",
                c.get()
            );
        }
        let _ = writeln!(
            out,
            "# TYPE kuma_dp_dns_upstream_request_failure_count counter\nkuma_dp_dns_upstream_request_failure_count {}",
            self.upstream_failures.get()
        );
        let _ = writeln!(
            out,
            "# TYPE kuma_dp_dns_entries_total gauge\nkuma_dp_dns_entries_total {}",
            self.entries.get()
        );
        let _ = writeln!(out, "# TYPE kuma_dp_dns_request_duration_seconds histogram");
        self.request_time
            .render_seconds(out, "kuma_dp_dns_request_duration_seconds", "");
        let _ = writeln!(
            out,
            "# TYPE kuma_dp_dns_upstream_request_duration_seconds histogram"
        );
        self.upstream_time
            .render_seconds(out, "kuma_dp_dns_upstream_request_duration_seconds", "");
    }
}
