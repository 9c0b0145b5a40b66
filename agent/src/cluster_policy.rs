//! A cluster's policies from the wire onto the forwarder's defaults: each
//! field the CP sent replaces the default, each it left unset keeps it.
//! Anything this agent cannot enforce is refused, naming the cluster and
//! field, so that the config is NACKed rather than half applied.

use std::time::Duration;

use koguma_forwarder as fwd;
use koguma_proto::v1 as pb;

/// What the traffic to a cluster, or into an inbound, runs under.
pub struct TrafficPolicy {
    pub timeouts: fwd::Timeouts,
    pub resilience: fwd::Resilience,
    pub health_check: Option<fwd::HealthCheck>,
    pub load_balancer: fwd::LoadBalancer,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// `policy` (if any) over the defaults `base_timeouts` and `base`: an
/// outbound cluster's, or an inbound's (which uses its timeouts and limits).
/// `subject` names it in errors (`cluster "backend"`, `inbound:...`).
pub fn with_defaults(
    policy: Option<&pb::ClusterPolicy>,
    base_timeouts: fwd::Timeouts,
    base: &fwd::Resilience,
    subject: &str,
) -> Result<TrafficPolicy, String> {
    let mut out = TrafficPolicy {
        timeouts: base_timeouts,
        resilience: base.clone(),
        health_check: None,
        load_balancer: fwd::LoadBalancer::RoundRobin,
    };
    let Some(p) = policy else { return Ok(out) };
    let at = |what: &str, e: String| format!("{subject}, {what}: {e}");
    if let Some(t) = &p.timeouts {
        timeouts(&mut out.timeouts, t);
    }
    if let Some(r) = &p.retry {
        retry(&mut out.resilience.retry, r).map_err(|e| at("MeshRetry", e))?;
    }
    if let Some(cb) = &p.circuit_breaker {
        circuit_breaker(&mut out.resilience, cb);
    }
    if let Some(hc) = &p.health_check {
        out.health_check = Some(health_check(hc).map_err(|e| at("MeshHealthCheck", e))?);
        if let Some(t) = hc.healthy_panic_threshold {
            out.resilience.outlier.panic_threshold = Some(t);
        }
    }
    if let Some(lb) = &p.load_balancer {
        out.load_balancer = load_balancer(lb).map_err(|e| at("MeshLoadBalancingStrategy", e))?;
    }
    Ok(out)
}

fn timeouts(out: &mut fwd::Timeouts, t: &pb::Timeouts) {
    let off_if_zero = |v: u64| (v > 0).then(|| ms(v));
    if let Some(v) = t.connect_ms {
        out.connect = ms(v);
    }
    if let Some(v) = t.idle_ms {
        // 0 is "no idle timeout": kept open as long as the process lives.
        out.idle = if v == 0 {
            Duration::from_secs(u32::MAX.into())
        } else {
            ms(v)
        };
    }
    if let Some(v) = t.request_ms {
        out.request = off_if_zero(v);
    }
    if let Some(v) = t.stream_idle_ms {
        out.stream_idle = if v == 0 {
            Duration::from_secs(u32::MAX.into())
        } else {
            ms(v)
        };
    }
    if let Some(v) = t.max_stream_duration_ms {
        out.max_stream_duration = off_if_zero(v);
    }
}

pub fn header_matcher(m: &pb::HeaderMatch) -> Result<fwd::HeaderMatcher, String> {
    let name = http::HeaderName::from_bytes(m.name.as_bytes())
        .map_err(|_| format!("{:?} is not a header name", m.name))?;
    let kind = match m.kind.as_str() {
        "" | "Exact" => fwd::HeaderMatchKind::Exact(m.value.clone()),
        "Prefix" => fwd::HeaderMatchKind::Prefix(m.value.clone()),
        "RegularExpression" => fwd::HeaderMatchKind::Regex(
            regex::Regex::new(&m.value)
                .map_err(|e| format!("regular expression {:?}: {e}", m.value))?,
        ),
        "Present" => fwd::HeaderMatchKind::Present,
        "Absent" => fwd::HeaderMatchKind::Absent,
        other => {
            return Err(format!(
                "header match type {other:?} is not supported by this agent"
            ));
        }
    };
    Ok(fwd::HeaderMatcher { name, kind })
}

/// Kuma's `retryOn` words as Envoy reads them.
fn retry_on(words: &[String]) -> Result<fwd::RetryOn, String> {
    let mut on = fwd::RetryOn::none();
    for w in words {
        match w.as_str() {
            "5XX" => on.server_error = true,
            "GatewayError" => on.gateway_error = true,
            "Reset" => on.reset = true,
            "Retriable4xx" => on.conflict = true,
            "ConnectFailure" => on.connect_failure = true,
            "EnvoyRatelimited" => on.rate_limited = true,
            "RefusedStream" => on.refused_stream = true,
            // gRPC's, as `grpc-status` codes.
            "Canceled" => on.grpc_statuses.push(1),
            "DeadlineExceeded" => on.grpc_statuses.push(4),
            "ResourceExhausted" => on.grpc_statuses.push(8),
            "Internal" => on.grpc_statuses.push(13),
            "Unavailable" => on.grpc_statuses.push(14),
            m if m.starts_with("HttpMethod") => {
                let name = m.trim_start_matches("HttpMethod");
                let method = http::Method::from_bytes(name.as_bytes())
                    .map_err(|_| format!("retryOn {m:?} is not a method"))?;
                on.methods.push(method);
            }
            code => match code.parse::<u16>() {
                Ok(c) => on.status_codes.push(c),
                Err(_) => return Err(format!("retryOn {code:?} is not supported by this agent")),
            },
        }
    }
    // Only methods named: Envoy retries nothing else then; Kuma's default
    // conditions apply to those methods.
    if words.iter().all(|w| w.starts_with("HttpMethod")) {
        let methods = std::mem::take(&mut on.methods);
        on = fwd::RetryOn {
            methods,
            idempotent_only: false,
            ..fwd::RetryOn::default()
        };
    }
    Ok(on)
}

fn retry(out: &mut fwd::RetryPolicy, r: &pb::Retry) -> Result<(), String> {
    if let Some(n) = r.max_connect_attempts {
        out.max_connect_attempts = n;
    }
    if let Some(n) = r.num_retries {
        out.num_retries = n;
    }
    if let Some(v) = r.per_try_timeout_ms {
        out.per_try_timeout = Some(ms(v));
    }
    if let Some(v) = r.base_interval_ms {
        out.base_interval = ms(v);
        // Kuma: maxInterval defaults to ten times the base.
        if r.max_interval_ms.is_none() {
            out.max_interval = ms(v) * 10;
        }
    }
    if let Some(v) = r.max_interval_ms {
        out.max_interval = ms(v);
    }
    if r.retry_on_set {
        out.retry_on = retry_on(&r.retry_on)?;
    }
    out.retriable_response_headers = r
        .retriable_response_headers
        .iter()
        .map(header_matcher)
        .collect::<Result<_, _>>()?;
    out.retriable_request_headers = r
        .retriable_request_headers
        .iter()
        .map(header_matcher)
        .collect::<Result<_, _>>()?;
    if !r.reset_headers.is_empty() {
        let mut headers = Vec::new();
        for h in &r.reset_headers {
            let name = http::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("reset header {:?} is not a header name", h.name))?;
            let format = match h.format.as_str() {
                "Seconds" => fwd::ResetFormat::Seconds,
                "UnixTimestamp" => fwd::ResetFormat::UnixTimestamp,
                f => return Err(format!("reset header format {f:?} is not supported")),
            };
            headers.push((name, format));
        }
        out.rate_limited = Some(fwd::RateLimitedBackOff {
            reset_headers: headers,
            // Kuma's default: 300 s.
            max_interval: r
                .rate_limited_max_interval_ms
                .map_or(Duration::from_secs(300), ms),
        });
    }
    Ok(())
}

fn circuit_breaker(out: &mut fwd::Resilience, cb: &pb::CircuitBreaker) {
    out.limits = fwd::ConnectionLimits {
        max_connections: cb.max_connections,
        max_pending_requests: cb.max_pending_requests,
        max_requests: cb.max_requests,
        max_retries: cb.max_retries,
    };
    let Some(od) = &cb.outlier_detection else {
        return;
    };
    let o = &mut out.outlier;
    o.enabled = !od.disabled;
    if let Some(v) = od.interval_ms {
        o.interval = ms(v);
    }
    if let Some(v) = od.base_ejection_time_ms {
        o.base_ejection_time = ms(v);
        o.max_ejection_time = o.max_ejection_time.max(ms(v));
    }
    if let Some(v) = od.max_ejection_percent {
        o.max_ejection_percent = v;
    }
    o.split_local = od.split_external_and_local_errors;
    // The detectors a policy names replace the defaults; unnamed ones are off.
    let named = od.consecutive_total.is_some()
        || od.consecutive_gateway.is_some()
        || od.consecutive_local_origin.is_some()
        || od.success_rate.is_some()
        || od.failure_percentage.is_some();
    if named {
        o.consecutive_5xx = od.consecutive_total;
        o.consecutive_gateway = od.consecutive_gateway;
        o.consecutive_local = od.consecutive_local_origin;
        // Envoy's defaults for the interval detectors' unset fields.
        o.success_rate = od.success_rate.as_ref().map(|s| fwd::SuccessRateDetector {
            minimum_hosts: s.minimum_hosts.unwrap_or(5),
            request_volume: s.request_volume.unwrap_or(100),
            stdev_factor: s.standard_deviation_factor.unwrap_or(1.9),
        });
        o.failure_percentage =
            od.failure_percentage
                .as_ref()
                .map(|f| fwd::FailurePercentageDetector {
                    minimum_hosts: f.minimum_hosts.unwrap_or(5),
                    request_volume: f.request_volume.unwrap_or(50),
                    threshold: f.threshold.unwrap_or(85),
                });
    }
    if let Some(t) = od.healthy_panic_threshold {
        o.panic_threshold = Some(t);
    }
}

fn health_check(hc: &pb::HealthCheck) -> Result<fwd::HealthCheck, String> {
    let kind = match &hc.check {
        None => return Err("no check (tcp, http or grpc) was sent".into()),
        Some(pb::health_check::Check::Tcp(t)) => fwd::HealthCheckKind::Tcp {
            send: t.send.clone(),
            receive: t.receive.clone(),
        },
        Some(pb::health_check::Check::Http(h)) => {
            let mut headers = Vec::new();
            for v in &h.request_headers {
                let name = http::HeaderName::from_bytes(v.name.as_bytes())
                    .map_err(|_| format!("header {:?} is not a header name", v.name))?;
                let value = http::HeaderValue::from_str(&v.value)
                    .map_err(|_| format!("header {:?}: value is not valid", v.name))?;
                headers.push((name, value, v.append));
            }
            let expected = h
                .expected_statuses
                .iter()
                .map(|s| u16::try_from(*s).map_err(|_| format!("status {s} is not a status")))
                .collect::<Result<_, _>>()?;
            fwd::HealthCheckKind::Http {
                path: h.path.clone(),
                headers,
                expected,
            }
        }
        Some(pb::health_check::Check::Grpc(g)) => fwd::HealthCheckKind::Grpc {
            service: g.service_name.clone(),
            authority: g.authority.clone(),
        },
    };
    if hc.interval_ms == 0 || hc.timeout_ms == 0 {
        return Err("interval and timeout must be more than 0".into());
    }
    Ok(fwd::HealthCheck {
        interval: ms(hc.interval_ms),
        timeout: ms(hc.timeout_ms),
        unhealthy_threshold: hc.unhealthy_threshold.max(1),
        healthy_threshold: hc.healthy_threshold.max(1),
        initial_jitter: ms(hc.initial_jitter_ms),
        interval_jitter: ms(hc.interval_jitter_ms),
        interval_jitter_percent: hc.interval_jitter_percent,
        always_log_failures: hc.always_log_failures,
        kind,
    })
}

fn load_balancer(lb: &pb::LoadBalancer) -> Result<fwd::LoadBalancer, String> {
    let hash = || -> Result<Vec<fwd::HashPolicy>, String> {
        lb.hash_policies
            .iter()
            .map(|h| {
                let source = match h.kind.as_str() {
                    "Header" => fwd::HashSource::Header(
                        http::HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
                            .map_err(|_| {
                                format!("hash header {:?} is not a header name", h.name)
                            })?,
                    ),
                    "Cookie" => fwd::HashSource::Cookie(h.name.clone()),
                    "SourceIP" | "Connection" => fwd::HashSource::SourceIp,
                    "QueryParameter" => fwd::HashSource::QueryParameter(h.name.clone()),
                    k => return Err(format!("hash policy {k:?} is not supported by this agent")),
                };
                Ok(fwd::HashPolicy {
                    source,
                    terminal: h.terminal,
                })
            })
            .collect()
    };
    Ok(match pb::LbPolicy::try_from(lb.policy) {
        Ok(pb::LbPolicy::RoundRobin) => fwd::LoadBalancer::RoundRobin,
        Ok(pb::LbPolicy::Random) => fwd::LoadBalancer::Random,
        Ok(pb::LbPolicy::LeastRequest) => fwd::LoadBalancer::LeastRequest {
            choice_count: lb.choice_count.unwrap_or(2).max(2),
        },
        Ok(pb::LbPolicy::RingHash) => fwd::LoadBalancer::RingHash {
            hash: hash()?,
            min_ring_size: lb.min_ring_size.unwrap_or(1024),
            max_ring_size: lb.max_ring_size.unwrap_or(8 << 20),
        },
        Ok(pb::LbPolicy::Maglev) => fwd::LoadBalancer::Maglev {
            hash: hash()?,
            table_size: lb.table_size.unwrap_or(65537),
        },
        Err(_) => {
            return Err(format!(
                "load balancer {} is not supported by this agent",
                lb.policy
            ));
        }
    })
}
