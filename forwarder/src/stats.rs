//! Counters the data path bumps with relaxed atomics (no locks, no
//! allocation per request) and their Prometheus rendering under Envoy's
//! metric names, so that Kuma's dashboards keep working.
//!
//! Stats objects are looked up by name only when a config is applied; the
//! data path holds `Arc`s to them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

pub use koguma_telemetry::metrics::{Counter, Gauge, Histogram};

/// Responses by status class, 1xx..5xx.
#[derive(Default)]
pub struct StatusClasses([Counter; 5]);

impl StatusClasses {
    pub fn record(&self, status: u16) {
        if let Some(c) = self.0.get(usize::from(status / 100).wrapping_sub(1)) {
            c.inc();
        }
    }

    pub fn get(&self, class: u16) -> u64 {
        self.0
            .get(usize::from(class).wrapping_sub(1))
            .map_or(0, Counter::get)
    }
}

/// Downstream side of one listener, and of its HTTP connection manager.
pub struct ListenerStats {
    pub address: String,
    pub http_prefix: String,
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub rq_total: Counter,
    pub rq_xx: StatusClasses,
    pub rq_time: Histogram,
    pub ssl_handshake: Counter,
    /// Handshakes that resumed a session (no certificate sent or checked).
    pub ssl_session_reused: Counter,
    pub ssl_connection_error: Counter,
    pub rbac_allowed: Counter,
    pub rbac_denied: Counter,
    pub rbac_shadow_denied: Counter,
    /// Zone proxies: connections closed because no route serves their SNI
    /// (or they sent none), as Envoy counts a missing filter chain.
    pub no_filter_chain_match: Counter,
    /// MeshFaultInjection: requests delayed, aborted, throttled.
    pub fault_delays_injected: Counter,
    pub fault_aborts_injected: Counter,
    pub fault_response_rl_injected: Counter,
    /// MeshRateLimit: requests let through and answered here; connections
    /// closed.
    pub http_rate_limit_ok: Counter,
    pub http_rate_limited: Counter,
    pub tcp_rate_limited: Counter,
}

/// One access log sink: lines written, and lines dropped because the sink
/// could not keep up (or was unreachable).
#[derive(Default)]
pub struct SinkStats {
    pub name: String,
    pub written: Counter,
    pub dropped: Counter,
}

/// Upstream side: one cluster (an outbound service, or an inbound's local
/// application).
#[derive(Default)]
pub struct ClusterStats {
    pub name: String,
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_connect_fail: Counter,
    pub cx_rx_bytes: Counter,
    pub cx_tx_bytes: Counter,
    pub rq_total: Counter,
    pub rq_xx: StatusClasses,
    pub rq_timeout: Counter,
    pub rq_time: Histogram,
    pub membership_total: Gauge,
    pub no_healthy_upstream: Counter,
    /// Requests sent again, to another endpoint.
    pub rq_retry: Counter,
    /// Retried requests that got an answer worth passing on.
    pub rq_retry_success: Counter,
    /// Retries not made because `maxRetries` were under way.
    pub rq_retry_overflow: Counter,
    /// Tries that took longer than MeshRetry's `perTryTimeout`.
    pub rq_per_try_timeout: Counter,
    /// Requests refused because `maxRequests` were in flight.
    pub rq_pending_overflow: Counter,
    /// Connections not made because `maxConnections` were open.
    pub cx_overflow: Counter,
    /// Requests in flight, and retries under way (the circuit breakers').
    pub rq_active: Gauge,
    pub rq_retry_active: Gauge,
    /// Endpoints taken out of rotation by outlier detection, in all and
    /// by detector (`Ejection` order).
    pub ejections_enforced: Counter,
    pub ejections_by: [Counter; 6],
    /// Active health checks (MeshHealthCheck).
    pub hc_attempt: Counter,
    pub hc_success: Counter,
    pub hc_failure: Counter,
    /// Endpoints failing their health checks.
    pub hc_unhealthy: Gauge,
}

#[derive(Default)]
pub struct Stats {
    listeners: Mutex<BTreeMap<String, Arc<ListenerStats>>>,
    clusters: Mutex<BTreeMap<String, Arc<ClusterStats>>>,
    sinks: Mutex<BTreeMap<String, Arc<SinkStats>>>,
    pub config_update_success: Counter,
    pub config_update_rejected: Counter,
}

/// Prometheus label values cannot hold every byte; Envoy turns `:` and `.`
/// into `_` in the names it exports, and so do we.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave a map half-updated
    // (inserts are single operations), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Stats {
    pub fn listener(&self, address: &str, http_prefix: &str) -> Arc<ListenerStats> {
        lock(&self.listeners)
            .entry(address.to_string())
            .or_insert_with(|| {
                Arc::new(ListenerStats {
                    address: sanitize(address),
                    http_prefix: sanitize(http_prefix),
                    cx_total: Counter::default(),
                    cx_active: Gauge::default(),
                    rq_total: Counter::default(),
                    rq_xx: StatusClasses::default(),
                    rq_time: Histogram::default(),
                    ssl_handshake: Counter::default(),
                    ssl_session_reused: Counter::default(),
                    ssl_connection_error: Counter::default(),
                    rbac_allowed: Counter::default(),
                    rbac_denied: Counter::default(),
                    rbac_shadow_denied: Counter::default(),
                    no_filter_chain_match: Counter::default(),
                    fault_delays_injected: Counter::default(),
                    fault_aborts_injected: Counter::default(),
                    fault_response_rl_injected: Counter::default(),
                    http_rate_limit_ok: Counter::default(),
                    http_rate_limited: Counter::default(),
                    tcp_rate_limited: Counter::default(),
                })
            })
            .clone()
    }

    /// The stats of the access log sink `name` ("file:/var/log/x.log").
    pub fn sink(&self, name: &str) -> Arc<SinkStats> {
        lock(&self.sinks)
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(SinkStats {
                    name: name.replace(['\\', '"', '\n'], "_"),
                    ..SinkStats::default()
                })
            })
            .clone()
    }

    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        lock(&self.clusters)
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(ClusterStats {
                    name: sanitize(name),
                    ..ClusterStats::default()
                })
            })
            .clone()
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let listeners: Vec<_> = lock(&self.listeners).values().cloned().collect();
        let clusters: Vec<_> = lock(&self.clusters).values().cloned().collect();

        let l_counters: [(&str, ListenerValue); 9] = [
            ("envoy_listener_downstream_cx_total", |l| {
                l.cx_total.get() as i64
            }),
            ("envoy_listener_downstream_cx_active", |l| l.cx_active.get()),
            ("envoy_listener_ssl_handshake", |l| {
                l.ssl_handshake.get() as i64
            }),
            ("envoy_listener_ssl_session_reused", |l| {
                l.ssl_session_reused.get() as i64
            }),
            ("envoy_listener_ssl_connection_error", |l| {
                l.ssl_connection_error.get() as i64
            }),
            ("envoy_rbac_allowed", |l| l.rbac_allowed.get() as i64),
            ("envoy_rbac_denied", |l| l.rbac_denied.get() as i64),
            ("envoy_rbac_shadow_denied", |l| {
                l.rbac_shadow_denied.get() as i64
            }),
            ("envoy_listener_no_filter_chain_match", |l| {
                l.no_filter_chain_match.get() as i64
            }),
        ];
        for (name, get) in l_counters {
            let kind = if name.ends_with("active") {
                "gauge"
            } else {
                "counter"
            };
            let by = ("envoy_listener_address", listener_address as Label<_>);
            series(&mut out, name, kind, &listeners, by, |l| get(l));
        }
        let http: Vec<_> = listeners.iter().filter(|l| l.rq_total.get() > 0).collect();
        let by_prefix = ("envoy_http_conn_manager_prefix", http_prefix as Label<_>);
        series(
            &mut out,
            "envoy_http_downstream_rq_total",
            "counter",
            &http,
            by_prefix,
            |l| l.rq_total.get() as i64,
        );
        family(&mut out, "envoy_http_downstream_rq_xx", "counter");
        for l in &http {
            for class in 1..=5 {
                let _ = writeln!(
                    out,
                    "envoy_http_downstream_rq_xx{{envoy_http_conn_manager_prefix=\"{}\",envoy_response_code_class=\"{class}\"}} {}",
                    l.http_prefix,
                    l.rq_xx.get(class)
                );
            }
        }
        // Kuma's limits are always enabled and enforced (100 %): Envoy's
        // `enabled` counts every request checked, `enforced` every one
        // refused.
        let http_values: [(&str, ListenerValue); 7] = [
            ("envoy_http_fault_delays_injected", |l| {
                l.fault_delays_injected.get() as i64
            }),
            ("envoy_http_fault_aborts_injected", |l| {
                l.fault_aborts_injected.get() as i64
            }),
            ("envoy_http_fault_response_rl_injected", |l| {
                l.fault_response_rl_injected.get() as i64
            }),
            ("envoy_http_local_rate_limit_ok", |l| {
                l.http_rate_limit_ok.get() as i64
            }),
            ("envoy_http_local_rate_limit_rate_limited", |l| {
                l.http_rate_limited.get() as i64
            }),
            ("envoy_http_local_rate_limit_enabled", |l| {
                (l.http_rate_limit_ok.get() + l.http_rate_limited.get()) as i64
            }),
            ("envoy_http_local_rate_limit_enforced", |l| {
                l.http_rate_limited.get() as i64
            }),
        ];
        for (name, get) in http_values {
            series(&mut out, name, "counter", &http, by_prefix, |l| get(l));
        }
        family(&mut out, "envoy_local_ratelimit_rate_limited", "counter");
        for l in listeners.iter().filter(|l| l.tcp_rate_limited.get() > 0) {
            let _ = writeln!(
                out,
                "envoy_local_ratelimit_rate_limited{{envoy_local_ratelimit_prefix=\"tcp_rate_limit\",envoy_listener_address=\"{}\"}} {}",
                l.address,
                l.tcp_rate_limited.get()
            );
        }
        let sinks: Vec<_> = lock(&self.sinks).values().cloned().collect();
        for (name, get) in [
            (
                "koguma_access_log_written_total",
                (|s| s.written.get()) as fn(&SinkStats) -> u64,
            ),
            ("koguma_access_log_dropped_total", |s| s.dropped.get()),
        ] {
            let by = ("sink", sink_name as Label<_>);
            series(&mut out, name, "counter", &sinks, by, |s| get(s) as i64);
        }
        family(&mut out, "envoy_http_downstream_rq_time", "histogram");
        for l in &http {
            let labels = format!("envoy_http_conn_manager_prefix=\"{}\"", l.http_prefix);
            l.rq_time
                .render(&mut out, "envoy_http_downstream_rq_time", &labels);
        }

        let c_values: &[(&str, &str, ClusterValue)] = &[
            ("envoy_cluster_upstream_cx_total", "counter", |c| {
                c.cx_total.get() as i64
            }),
            ("envoy_cluster_upstream_cx_active", "gauge", |c| {
                c.cx_active.get()
            }),
            ("envoy_cluster_upstream_cx_connect_fail", "counter", |c| {
                c.cx_connect_fail.get() as i64
            }),
            ("envoy_cluster_upstream_cx_rx_bytes_total", "counter", |c| {
                c.cx_rx_bytes.get() as i64
            }),
            ("envoy_cluster_upstream_cx_tx_bytes_total", "counter", |c| {
                c.cx_tx_bytes.get() as i64
            }),
            ("envoy_cluster_upstream_rq_total", "counter", |c| {
                c.rq_total.get() as i64
            }),
            ("envoy_cluster_upstream_rq_timeout", "counter", |c| {
                c.rq_timeout.get() as i64
            }),
            ("envoy_cluster_membership_total", "gauge", |c| {
                c.membership_total.get()
            }),
            ("envoy_cluster_membership_healthy", "gauge", |c| {
                c.membership_total.get() - c.hc_unhealthy.get()
            }),
            ("envoy_cluster_lb_healthy_panic", "counter", |c| {
                c.no_healthy_upstream.get() as i64
            }),
            ("envoy_cluster_upstream_rq_retry", "counter", |c| {
                c.rq_retry.get() as i64
            }),
            (
                "envoy_cluster_outlier_detection_ejections_enforced_total",
                "counter",
                |c| c.ejections_enforced.get() as i64,
            ),
            ("envoy_cluster_upstream_rq_retry_success", "counter", |c| {
                c.rq_retry_success.get() as i64
            }),
            ("envoy_cluster_upstream_rq_retry_overflow", "counter", |c| {
                c.rq_retry_overflow.get() as i64
            }),
            (
                "envoy_cluster_upstream_rq_per_try_timeout",
                "counter",
                |c| c.rq_per_try_timeout.get() as i64,
            ),
            (
                "envoy_cluster_upstream_rq_pending_overflow",
                "counter",
                |c| c.rq_pending_overflow.get() as i64,
            ),
            ("envoy_cluster_upstream_cx_overflow", "counter", |c| {
                c.cx_overflow.get() as i64
            }),
            ("envoy_cluster_upstream_rq_active", "gauge", |c| {
                c.rq_active.get()
            }),
            (
                "envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx",
                "counter",
                |c| c.ejections_by[0].get() as i64,
            ),
            (
                "envoy_cluster_outlier_detection_ejections_enforced_consecutive_gateway_failure",
                "counter",
                |c| c.ejections_by[1].get() as i64,
            ),
            (
                "envoy_cluster_outlier_detection_ejections_enforced_consecutive_local_origin_failure",
                "counter",
                |c| c.ejections_by[2].get() as i64,
            ),
            (
                "envoy_cluster_outlier_detection_ejections_enforced_success_rate",
                "counter",
                |c| c.ejections_by[3].get() as i64,
            ),
            (
                "envoy_cluster_outlier_detection_ejections_enforced_failure_percentage",
                "counter",
                |c| c.ejections_by[4].get() as i64,
            ),
            ("envoy_cluster_health_check_attempt", "counter", |c| {
                c.hc_attempt.get() as i64
            }),
            ("envoy_cluster_health_check_success", "counter", |c| {
                c.hc_success.get() as i64
            }),
            ("envoy_cluster_health_check_failure", "counter", |c| {
                c.hc_failure.get() as i64
            }),
        ];
        for (name, kind, get) in c_values {
            let by = ("envoy_cluster_name", cluster_name as Label<_>);
            series(&mut out, name, kind, &clusters, by, |c| get(c));
        }
        family(&mut out, "envoy_cluster_upstream_rq_xx", "counter");
        for c in &clusters {
            for class in 1..=5 {
                let _ = writeln!(
                    out,
                    "envoy_cluster_upstream_rq_xx{{envoy_cluster_name=\"{}\",envoy_response_code_class=\"{class}\"}} {}",
                    c.name,
                    c.rq_xx.get(class)
                );
            }
        }
        family(&mut out, "envoy_cluster_upstream_rq_time", "histogram");
        for c in &clusters {
            let labels = format!("envoy_cluster_name=\"{}\"", c.name);
            c.rq_time
                .render(&mut out, "envoy_cluster_upstream_rq_time", &labels);
        }
        family(
            &mut out,
            "envoy_listener_manager_lds_update_success",
            "counter",
        );
        let _ = writeln!(
            out,
            "envoy_listener_manager_lds_update_success {}",
            self.config_update_success.get()
        );
        family(
            &mut out,
            "envoy_listener_manager_lds_update_rejected",
            "counter",
        );
        let _ = writeln!(
            out,
            "envoy_listener_manager_lds_update_rejected {}",
            self.config_update_rejected.get()
        );
        out
    }
}

/// Reads one series' value off a stats object, for rendering tables.
type ListenerValue = fn(&ListenerStats) -> i64;
type ClusterValue = fn(&ClusterStats) -> i64;

fn family(out: &mut String, name: &str, kind: &str) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// What a series is labelled by, from its item.
type Label<T> = fn(&T) -> &str;

fn listener_address(l: &Arc<ListenerStats>) -> &str {
    &l.address
}

fn http_prefix<'x>(l: &'x &Arc<ListenerStats>) -> &'x str {
    &l.http_prefix
}

fn cluster_name(c: &Arc<ClusterStats>) -> &str {
    &c.name
}

fn sink_name(s: &Arc<SinkStats>) -> &str {
    &s.name
}

/// One metric family, a line per item labelled `label="<label_of(item)>"`.
fn series<T>(
    out: &mut String,
    name: &str,
    kind: &str,
    items: &[T],
    (label, label_of): (&str, Label<T>),
    get: impl Fn(&T) -> i64,
) {
    family(out, name, kind);
    for item in items {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{}\"}} {}",
            label_of(item),
            get(item)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_envoy_names_and_cumulative_buckets() {
        let stats = Stats::default();
        let c = stats.cluster("backend");
        c.rq_total.inc();
        c.rq_xx.record(503);
        c.rq_time.observe(Duration::from_millis(3));
        let text = stats.render();
        assert!(text.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 1"));
        assert!(text.contains(
            "envoy_cluster_upstream_rq_xx{envoy_cluster_name=\"backend\",envoy_response_code_class=\"5\"} 1"
        ));
        assert!(text.contains(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"1\"} 0"
        ));
        assert!(text.contains(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"5\"} 1"
        ));
        assert!(text.contains(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"+Inf\"} 1"
        ));
        assert!(Arc::ptr_eq(&c, &stats.cluster("backend")));
    }
}
