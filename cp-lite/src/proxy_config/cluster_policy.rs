//! What the `to` policies of a mesh set for one dataplane's traffic to one
//! service: each type's `default`s merged by the engine
//! (`koguma_api::policy::merge`), then turned into the wire's
//! `ClusterPolicy`. A policy type is one converter below; selecting,
//! ordering and merging are the engine's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use koguma_api::policy::merge::{self, Caller};
use koguma_api::policy::{
    CircuitBreakerConf, HealthCheckConf, RetryConf, TimeoutConf, decimal, duration,
};
use koguma_api::{HashPolicyConf, InboundSubject, LoadBalancingConf, Protocol, ResourceType};
use koguma_proto::v1 as pb;

use crate::catalog::Catalog;
use crate::store::StoredResource;

/// The `to` policies of one mesh, by type and name.
#[derive(Debug, Default, PartialEq)]
pub struct MeshPolicies {
    by_type: BTreeMap<ResourceType, Vec<Arc<StoredResource>>>,
}

impl MeshPolicies {
    pub fn of(catalog: &Catalog, mesh: &str) -> MeshPolicies {
        let mut by_type = BTreeMap::new();
        for &rtype in ResourceType::ALL.iter().filter(|t| t.is_mesh_scoped()) {
            let list: Vec<Arc<StoredResource>> = catalog
                .list(rtype, Some(mesh))
                .filter(|r| r.resource.spec.as_policy().is_some())
                .cloned()
                .collect();
            if !list.is_empty() {
                by_type.insert(rtype, list);
            }
        }
        MeshPolicies { by_type }
    }

    /// The merged conf of type `rtype` for `caller`'s traffic to `service`.
    pub fn merged<C: serde::de::DeserializeOwned>(
        &self,
        rtype: ResourceType,
        caller: &Caller<'_>,
        service: &str,
    ) -> Option<C> {
        merge::merged(self.of_type(rtype), caller, service)
    }

    /// The merged `from`/`rules` conf of type `rtype` for every caller of
    /// the inbound `subject`.
    pub fn merged_inbound<C: serde::de::DeserializeOwned>(
        &self,
        rtype: ResourceType,
        subject: &InboundSubject<'_>,
    ) -> Option<C> {
        merge::merged_inbound(self.of_type(rtype), subject)
    }

    /// The `to` entries of type `rtype` for that traffic, least specific
    /// first, unmerged (routes merge their rules by matches).
    pub fn applicable(
        &self,
        rtype: ResourceType,
        caller: &Caller<'_>,
        service: &str,
    ) -> Vec<serde_json::Value> {
        merge::applicable(self.of_type(rtype), caller, service)
    }

    /// The policies of type `rtype`, with their names.
    pub(super) fn of_type(
        &self,
        rtype: ResourceType,
    ) -> impl Iterator<Item = (&str, &dyn koguma_api::AnyPolicy)> {
        self.by_type
            .get(&rtype)
            .into_iter()
            .flat_map(|list| Self::named(list))
    }

    fn named(
        list: &[Arc<StoredResource>],
    ) -> impl Iterator<Item = (&str, &dyn koguma_api::AnyPolicy)> {
        list.iter().filter_map(|r| {
            let name = r.resource.meta.name.as_str();
            r.resource.spec.as_policy().map(|p| (name, p))
        })
    }

    /// What MeshTimeout and MeshCircuitBreaker `from`/`rules` set for the
    /// inbound `subject`; `None` when none selects it.
    pub fn for_inbound(&self, subject: &InboundSubject<'_>) -> Option<pb::ClusterPolicy> {
        let timeouts = self
            .merged_inbound::<TimeoutConf>(ResourceType::MeshTimeout, subject)
            .map(|c| timeouts(&c));
        let circuit_breaker = self
            .merged_inbound::<CircuitBreakerConf>(ResourceType::MeshCircuitBreaker, subject)
            .map(|c| circuit_breaker(&c));
        (timeouts.is_some() || circuit_breaker.is_some()).then(|| pb::ClusterPolicy {
            timeouts,
            circuit_breaker,
            ..Default::default()
        })
    }

    /// What applies to `caller`'s traffic to `service` (which speaks
    /// `protocol`); `None` when no policy does.
    pub fn for_caller(
        &self,
        caller: &Caller<'_>,
        service: &str,
        protocol: Protocol,
    ) -> Option<pb::ClusterPolicy> {
        if self.by_type.is_empty() {
            return None;
        }
        let policy = pb::ClusterPolicy {
            timeouts: self
                .merged::<TimeoutConf>(ResourceType::MeshTimeout, caller, service)
                .map(|c| timeouts(&c)),
            retry: self
                .merged::<RetryConf>(ResourceType::MeshRetry, caller, service)
                .map(|c| retry(&c, protocol)),
            circuit_breaker: self
                .merged::<CircuitBreakerConf>(ResourceType::MeshCircuitBreaker, caller, service)
                .map(|c| circuit_breaker(&c)),
            health_check: self
                .merged::<HealthCheckConf>(ResourceType::MeshHealthCheck, caller, service)
                .and_then(|c| health_check(&c, protocol)),
            load_balancer: self
                .merged::<LoadBalancingConf>(
                    ResourceType::MeshLoadBalancingStrategy,
                    caller,
                    service,
                )
                .and_then(|c| load_balancer(&c)),
        };
        (policy != pb::ClusterPolicy::default()).then_some(policy)
    }
}

fn ms(value: &Option<String>) -> Option<u64> {
    duration(value).map(|d| d.as_millis() as u64)
}

fn timeouts(c: &TimeoutConf) -> pb::Timeouts {
    let http = c.http.clone().unwrap_or_default();
    pb::Timeouts {
        connect_ms: ms(&c.connection_timeout),
        idle_ms: ms(&c.idle_timeout),
        request_ms: ms(&http.request_timeout),
        stream_idle_ms: ms(&http.stream_idle_timeout),
        max_stream_duration_ms: ms(&http.max_stream_duration),
    }
}

fn header_matches(list: &Option<Vec<koguma_api::headers::HeaderMatch>>) -> Vec<pb::HeaderMatch> {
    list.iter()
        .flatten()
        .map(|m| pb::HeaderMatch {
            kind: m.kind().to_string(),
            name: m.name.to_ascii_lowercase(),
            value: m.value.clone().unwrap_or_default(),
        })
        .collect()
}

/// The `tcp` part always; of `http` and `grpc`, the one for the
/// destination's protocol (Kuma configures gRPC retries on gRPC services
/// and HTTP ones on the other HTTP services).
fn retry(c: &RetryConf, protocol: Protocol) -> pb::Retry {
    let mut out = pb::Retry {
        max_connect_attempts: c.tcp.as_ref().and_then(|t| t.max_connect_attempt),
        ..Default::default()
    };
    let (num, per_try, back_off, rate_limited, retry_on) = match protocol {
        Protocol::Grpc => {
            let Some(g) = &c.grpc else { return out };
            (
                g.num_retries,
                &g.per_try_timeout,
                &g.back_off,
                &g.rate_limited_back_off,
                &g.retry_on,
            )
        }
        Protocol::Http | Protocol::Http2 => {
            let Some(h) = &c.http else { return out };
            out.retriable_response_headers = header_matches(&h.retriable_response_headers);
            out.retriable_request_headers = header_matches(&h.retriable_request_headers);
            (
                h.num_retries,
                &h.per_try_timeout,
                &h.back_off,
                &h.rate_limited_back_off,
                &h.retry_on,
            )
        }
        Protocol::Tcp => return out,
    };
    out.num_retries = num;
    out.per_try_timeout_ms = ms(per_try);
    if let Some(b) = back_off {
        out.base_interval_ms = ms(&b.base_interval);
        out.max_interval_ms = ms(&b.max_interval);
    }
    if let Some(words) = retry_on {
        out.retry_on = words.clone();
        out.retry_on_set = true;
    }
    if let Some(r) = rate_limited {
        out.reset_headers = r
            .reset_headers
            .iter()
            .flatten()
            .map(|h| pb::ResetHeader {
                name: h.name.to_ascii_lowercase(),
                format: h.format.clone(),
            })
            .collect();
        out.rate_limited_max_interval_ms = ms(&r.max_interval);
    }
    out
}

fn circuit_breaker(c: &CircuitBreakerConf) -> pb::CircuitBreaker {
    let limits = c.connection_limits.clone().unwrap_or_default();
    pb::CircuitBreaker {
        max_connections: limits.max_connections,
        max_pending_requests: limits.max_pending_requests,
        max_requests: limits.max_requests,
        max_retries: limits.max_retries,
        outlier_detection: c.outlier_detection.as_ref().map(|od| {
            let d = od.detectors.clone().unwrap_or_default();
            let consecutive = |c: &Option<koguma_api::policy::Consecutive>| {
                // A detector named without a count takes Envoy's 5.
                c.as_ref().map(|c| c.consecutive.unwrap_or(5))
            };
            pb::OutlierDetection {
                disabled: od.disabled.unwrap_or(false),
                interval_ms: ms(&od.interval),
                base_ejection_time_ms: ms(&od.base_ejection_time),
                max_ejection_percent: od.max_ejection_percent,
                split_external_and_local_errors: od
                    .split_external_and_local_errors
                    .unwrap_or(false),
                consecutive_total: consecutive(&d.total_failures),
                consecutive_gateway: consecutive(&d.gateway_failures),
                consecutive_local_origin: consecutive(&d.local_origin_failures),
                success_rate: d.success_rate.as_ref().map(|s| pb::SuccessRate {
                    minimum_hosts: s.minimum_hosts,
                    request_volume: s.request_volume,
                    standard_deviation_factor: decimal(&s.standard_deviation_factor),
                }),
                failure_percentage: d
                    .failure_percentage
                    .as_ref()
                    .map(|f| pb::FailurePercentage {
                        minimum_hosts: f.minimum_hosts,
                        request_volume: f.request_volume,
                        threshold: f.threshold,
                    }),
                healthy_panic_threshold: decimal(&od.healthy_panic_threshold),
            }
        }),
    }
}

/// Kuma's defaults (`meshhealthcheck` plugin): every minute, 15 s to
/// answer, out after 5 failures, back after 1 success.
const HC_INTERVAL: Duration = Duration::from_secs(60);
const HC_TIMEOUT: Duration = Duration::from_secs(15);

/// The check for the destination's protocol: HTTP services get the `http`
/// check, gRPC ones the `grpc` check, when set and not disabled; otherwise
/// the `tcp` check, unless it is disabled too. `None`: no check.
fn health_check(c: &HealthCheckConf, protocol: Protocol) -> Option<pb::HealthCheck> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let enabled = |d: Option<bool>| !d.unwrap_or(false);
    let http = c.http.as_ref().filter(|h| enabled(h.disabled));
    let grpc = c.grpc.as_ref().filter(|g| enabled(g.disabled));
    let tcp = c.tcp.as_ref().filter(|t| enabled(t.disabled));
    let check = match protocol {
        Protocol::Http | Protocol::Http2 if http.is_some() => http.map(|h| {
            let mods = h.request_headers_to_add.clone().unwrap_or_default();
            let mut headers: Vec<pb::HeaderValue> = mods
                .set
                .iter()
                .map(|kv| pb::HeaderValue {
                    name: kv.name.clone(),
                    value: kv.value.clone(),
                    append: false,
                })
                .collect();
            headers.extend(mods.add.iter().map(|kv| pb::HeaderValue {
                name: kv.name.clone(),
                value: kv.value.clone(),
                append: true,
            }));
            pb::health_check::Check::Http(pb::HttpCheck {
                path: h.path.clone().unwrap_or_else(|| "/".into()),
                request_headers: headers,
                expected_statuses: h.expected_statuses.clone().unwrap_or_default(),
            })
        }),
        Protocol::Grpc if grpc.is_some() => grpc.map(|g| {
            pb::health_check::Check::Grpc(pb::GrpcCheck {
                service_name: g.service_name.clone().unwrap_or_default(),
                authority: g.authority.clone().unwrap_or_default(),
            })
        }),
        _ if c.tcp.is_none() || tcp.is_some() => Some(pb::health_check::Check::Tcp(pb::TcpCheck {
            send: tcp
                .and_then(|t| t.send.as_ref())
                .and_then(|s| b64.decode(s).ok())
                .unwrap_or_default(),
            receive: tcp
                .and_then(|t| t.receive.as_ref())
                .map(|r| r.iter().filter_map(|s| b64.decode(s).ok()).collect())
                .unwrap_or_default(),
        })),
        _ => None,
    }?;
    let ms_or = |v: &Option<String>, d: Duration| duration(v).unwrap_or(d).as_millis() as u64;
    Some(pb::HealthCheck {
        interval_ms: ms_or(&c.interval, HC_INTERVAL),
        timeout_ms: ms_or(&c.timeout, HC_TIMEOUT),
        unhealthy_threshold: c.unhealthy_threshold.unwrap_or(5),
        healthy_threshold: c.healthy_threshold.unwrap_or(1),
        initial_jitter_ms: ms_or(&c.initial_jitter, Duration::ZERO),
        interval_jitter_ms: ms_or(&c.interval_jitter, Duration::ZERO),
        interval_jitter_percent: c.interval_jitter_percent.unwrap_or(0),
        always_log_failures: c.always_log_health_check_failures.unwrap_or(false),
        healthy_panic_threshold: decimal(&c.healthy_panic_threshold),
        fail_traffic_on_panic: c.fail_traffic_on_panic.unwrap_or(false),
        check: Some(check),
    })
}

/// The load balancer, when the merged strategy names one (locality is the
/// index's: it orders the endpoints every caller shares).
fn load_balancer(c: &LoadBalancingConf) -> Option<pb::LoadBalancer> {
    let lb = c.load_balancer.as_ref()?;
    let hashes = |own: &Option<Vec<HashPolicyConf>>| {
        own.as_ref()
            .or(c.hash_policies.as_ref())
            .map(|list| list.iter().map(hash_policy).collect())
            .unwrap_or_default()
    };
    let mut out = pb::LoadBalancer::default();
    match lb.kind.as_str() {
        "LeastRequest" => {
            out.policy = pb::LbPolicy::LeastRequest.into();
            out.choice_count = lb.least_request.as_ref().and_then(|l| l.choice_count);
        }
        "Random" => out.policy = pb::LbPolicy::Random.into(),
        "RingHash" => {
            out.policy = pb::LbPolicy::RingHash.into();
            let rh = lb.ring_hash.clone().unwrap_or_default();
            out.hash_policies = hashes(&rh.hash_policies);
            out.min_ring_size = rh.min_ring_size.map(u64::from);
            out.max_ring_size = rh.max_ring_size.map(u64::from);
        }
        "Maglev" => {
            out.policy = pb::LbPolicy::Maglev.into();
            let m = lb.maglev.clone().unwrap_or_default();
            out.hash_policies = hashes(&m.hash_policies);
            out.table_size = m.table_size.map(u64::from);
        }
        _ => out.policy = pb::LbPolicy::RoundRobin.into(),
    }
    Some(out)
}

fn hash_policy(h: &HashPolicyConf) -> pb::HashPolicy {
    let name = match h.kind.as_str() {
        "Header" => h.header.as_ref().map(|n| n.name.to_ascii_lowercase()),
        "Cookie" => h.cookie.as_ref().map(|c| c.name.clone()),
        "QueryParameter" => h.query_parameter.as_ref().map(|n| n.name.clone()),
        _ => None,
    };
    pb::HashPolicy {
        kind: h.kind.clone(),
        name: name.unwrap_or_default(),
        terminal: h.terminal.unwrap_or(false),
    }
}
