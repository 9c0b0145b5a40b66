//! A proxy config as JSON, for people: the CP's `_config` endpoint and the
//! agent's `/config_dump` show the same shape.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::v1::{Cluster, ClusterPolicy, HttpRouteRule, Permissions, ProxyConfig, WeightedCluster};

fn protocol(p: i32) -> &'static str {
    crate::protocol(p).map_or("tcp", koguma_types::Protocol::as_str)
}

fn permissions(p: Option<&Permissions>) -> Value {
    let Some(p) = p else { return Value::Null };
    p.rules
        .iter()
        .map(|r| {
            // As the agent enforces it: an action it does not know denies.
            let action = crate::permission_action(r.action)
                .map_or("Deny", koguma_types::PermissionAction::as_str);
            json!({"action": action, "requiredUris": r.required_uris, "policy": r.policy})
        })
        .collect()
}

fn weighted(w: &WeightedCluster) -> Value {
    if w.cluster.is_empty() {
        json!({"weight": w.weight, "unresolved": w.unresolved})
    } else {
        json!({"cluster": w.cluster, "weight": w.weight})
    }
}

/// One route rule: its match and where it sends (filters by kind).
fn http_route(r: &HttpRouteRule) -> Value {
    let m = r.r#match.clone().unwrap_or_default();
    let headers: Vec<Value> = m
        .headers
        .iter()
        .map(|h| json!({"type": h.kind, "name": h.name, "value": h.value}))
        .collect();
    let query: Vec<Value> = m
        .query
        .iter()
        .map(|q| json!({"type": q.kind, "name": q.name, "value": q.value}))
        .collect();
    let filters: Vec<&str> = r
        .filters
        .iter()
        .filter_map(|f| f.filter.as_ref())
        .map(|f| match f {
            crate::v1::route_filter::Filter::RequestHeaders(_) => "RequestHeaderModifier",
            crate::v1::route_filter::Filter::ResponseHeaders(_) => "ResponseHeaderModifier",
            crate::v1::route_filter::Filter::Redirect(_) => "RequestRedirect",
            crate::v1::route_filter::Filter::Rewrite(_) => "URLRewrite",
            crate::v1::route_filter::Filter::Mirror(_) => "RequestMirror",
        })
        .collect();
    json!({"match": {"path": {"type": m.path_kind, "value": m.path}, "method": m.method, "headers": headers, "queryParams": query},
           "filters": filters, "backends": r.backends.iter().map(weighted).collect::<Vec<_>>()})
}

/// What the policies set for one cluster, field names as on the wire.
fn cluster_policy(p: &ClusterPolicy) -> Value {
    let timeouts = p.timeouts.as_ref().map(|t| {
        json!({"connectMs": t.connect_ms, "idleMs": t.idle_ms, "requestMs": t.request_ms,
               "streamIdleMs": t.stream_idle_ms, "maxStreamDurationMs": t.max_stream_duration_ms})
    });
    let retry = p.retry.as_ref().map(|r| {
        json!({"maxConnectAttempts": r.max_connect_attempts, "numRetries": r.num_retries,
               "perTryTimeoutMs": r.per_try_timeout_ms, "baseIntervalMs": r.base_interval_ms,
               "maxIntervalMs": r.max_interval_ms,
               "retryOn": r.retry_on_set.then_some(&r.retry_on)})
    });
    let breaker = p.circuit_breaker.as_ref().map(|c| {
        let od = c.outlier_detection.as_ref().map(|o| {
            json!({"disabled": o.disabled, "intervalMs": o.interval_ms, "baseEjectionTimeMs": o.base_ejection_time_ms,
                   "maxEjectionPercent": o.max_ejection_percent, "consecutiveTotal": o.consecutive_total,
                   "consecutiveGateway": o.consecutive_gateway, "consecutiveLocalOrigin": o.consecutive_local_origin,
                   "successRate": o.success_rate.is_some(), "failurePercentage": o.failure_percentage.is_some()})
        });
        json!({"maxConnections": c.max_connections, "maxPendingRequests": c.max_pending_requests,
               "maxRequests": c.max_requests, "maxRetries": c.max_retries, "outlierDetection": od})
    });
    let health = p.health_check.as_ref().map(|h| {
        let kind = match &h.check {
            Some(crate::v1::health_check::Check::Http(c)) => json!({"http": {"path": c.path}}),
            Some(crate::v1::health_check::Check::Grpc(c)) => json!({"grpc": {"serviceName": c.service_name}}),
            Some(crate::v1::health_check::Check::Tcp(_)) => json!({"tcp": {}}),
            None => Value::Null,
        };
        json!({"intervalMs": h.interval_ms, "timeoutMs": h.timeout_ms, "unhealthyThreshold": h.unhealthy_threshold,
               "healthyThreshold": h.healthy_threshold, "check": kind})
    });
    let lb = p.load_balancer.as_ref().map(|l| {
        // Kuma's names for the load balancer types.
        let policy = match crate::v1::LbPolicy::try_from(l.policy) {
            Ok(crate::v1::LbPolicy::RoundRobin) => "RoundRobin",
            Ok(crate::v1::LbPolicy::LeastRequest) => "LeastRequest",
            Ok(crate::v1::LbPolicy::Random) => "Random",
            Ok(crate::v1::LbPolicy::RingHash) => "RingHash",
            Ok(crate::v1::LbPolicy::Maglev) => "Maglev",
            Err(_) => "unknown",
        };
        let hashes: Vec<Value> = l
            .hash_policies
            .iter()
            .map(|h| json!({"type": h.kind, "name": h.name}))
            .collect();
        json!({"type": policy, "hashPolicies": hashes})
    });
    json!({"timeouts": timeouts, "retry": retry, "circuitBreaker": breaker, "healthCheck": health, "loadBalancer": lb})
}

fn access_log(b: &crate::v1::AccessLogBackend) -> Value {
    use crate::v1::access_log_backend::Sink;
    let (kind, target) = match &b.sink {
        Some(Sink::File(p)) => ("File", p.as_str()),
        Some(Sink::Tcp(a)) => ("Tcp", a.as_str()),
        Some(Sink::Otel(e)) => ("OpenTelemetry", e.as_str()),
        None => ("", ""),
    };
    let json: BTreeMap<&str, &str> = b
        .json
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    json!({"type": kind, "target": target, "plain": (!b.plain.is_empty()).then_some(&b.plain),
           "json": (!json.is_empty()).then_some(json)})
}

/// What MeshFaultInjection, MeshRateLimit and MeshAccessLog set on one
/// listener.
fn listener_policy(p: &crate::v1::ListenerPolicy) -> Value {
    let faults: Vec<Value> = p
        .faults
        .iter()
        .map(|r| {
            let list: Vec<Value> = r.faults.iter().map(|f| {
                json!({"abortStatus": f.abort_status, "abortPercent": f.abort_percent, "delayMs": f.delay_ms,
                       "delayPercent": f.delay_percent, "bandwidthKbps": f.bandwidth_kbps, "bandwidthPercent": f.bandwidth_percent})
            }).collect();
            json!({"caller": (!r.caller.is_empty()).then_some(&r.caller), "faults": list})
        })
        .collect();
    let rate = |r: &crate::v1::RateLimit| json!({"num": r.num, "intervalMs": r.interval_ms, "status": (r.status != 0).then_some(r.status)});
    json!({"faults": faults, "httpRateLimit": p.http_rate_limit.as_ref().map(rate),
           "tcpRateLimit": p.tcp_rate_limit.as_ref().map(rate),
           "accessLogs": p.access_logs.iter().map(access_log).collect::<Vec<_>>()})
}

pub fn proxy_config(config: &ProxyConfig) -> Value {
    let inbounds: Vec<Value> = config
        .inbounds
        .iter()
        .map(|i| {
            json!({
                "name": i.name,
                "address": i.address,
                "port": i.port,
                "serviceAddress": i.service_address,
                "servicePort": i.service_port,
                "protocol": protocol(i.protocol),
                "service": i.service,
                "tags": i.tags,
                "permissions": permissions(i.permissions.as_ref()),
                "policy": i.policy.as_ref().map(cluster_policy),
                "listenerPolicy": i.listener_policy.as_ref().map(listener_policy),
            })
        })
        .collect();
    let endpoints = |c: &Cluster| -> Vec<Value> {
        c.endpoints
            .iter()
            .map(|e| json!({"address": e.address, "port": e.port, "weight": e.weight, "priority": e.priority, "zone": e.zone, "tags": e.tags}))
            .collect()
    };
    let clusters: BTreeMap<&str, &Cluster> = config
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let outbounds: Vec<Value> = config
        .outbounds
        .iter()
        .map(|o| {
            let cluster = clusters.get(o.cluster.as_str());
            json!({
                "name": o.name,
                "address": o.address,
                "port": o.port,
                "service": o.service,
                "protocol": protocol(o.protocol),
                "cluster": o.cluster,
                // The cluster's, repeated here for people reading one listener.
                "endpoints": cluster.map(|c| endpoints(c)).unwrap_or_default(),
                "identity": cluster.map(|c| c.identity.as_str()).filter(|i| !i.is_empty()),
                "transparent": o.transparent,
                "httpRoutes": o.http_routes.iter().map(http_route).collect::<Vec<_>>(),
                "tcpBackends": o.tcp_backends.iter().map(weighted).collect::<Vec<_>>(),
                "listenerPolicy": o.listener_policy.as_ref().map(listener_policy),
            })
        })
        .collect();
    let cluster_list: Vec<Value> = config
        .clusters
        .iter()
        .map(|c| json!({"name": c.name, "identity": c.identity, "sni": c.sni, "endpoints": endpoints(c), "policy": c.policy.as_ref().map(cluster_policy)}))
        .collect();
    // Certificates are shown by count: /certs on the agent describes them.
    let mtls = config.mtls.as_ref().map(|m| {
        let mode = crate::mtls_mode(m.mode).unwrap_or_default().as_str();
        json!({"mode": mode, "peerUriPrefix": m.peer_uri_prefix, "caCerts": m.ca_certs.len(), "certChain": m.cert_chain.len()})
    });
    let tp = config.transparent_proxy.as_ref().map(|t| {
        json!({"redirectPortInbound": t.redirect_port_inbound, "redirectPortOutbound": t.redirect_port_outbound, "ipv6": t.ipv6, "passthrough": t.passthrough})
    });
    let dns: Vec<Value> = config
        .dns_records
        .iter()
        .map(|r| json!({"name": r.name, "ips": r.ips}))
        .collect();
    let zone_proxy = config.zone_proxy.as_ref().map(|z| {
        let routes: Vec<Value> = z
            .routes
            .iter()
            .map(|r| json!({"sni": r.sni, "cluster": r.cluster, "terminate": r.terminate.as_ref().map(|t| t.mesh.as_str())}))
            .collect();
        json!({"address": z.address, "port": z.port, "routes": routes})
    });
    json!({"mesh": config.mesh, "name": config.name, "mtls": mtls, "transparentProxy": tp, "inbounds": inbounds, "outbounds": outbounds, "clusters": cluster_list, "dnsRecords": dns, "zoneProxy": zone_proxy,
           "passthroughAccessLogs": config.passthrough_access_logs.iter().map(access_log).collect::<Vec<_>>()})
}
