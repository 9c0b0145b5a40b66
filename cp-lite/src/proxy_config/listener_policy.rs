//! What MeshFaultInjection, MeshRateLimit and MeshAccessLog set on one
//! listener: merged by the engine like every policy, then turned into the
//! wire's `ListenerPolicy`. Kuma's access log placeholders are filled in
//! here, per listener, so that the agent only sees Envoy's operators.

use koguma_api::policy::merge::{self, Caller};
use koguma_api::policy::{
    AccessLogBackend, AccessLogConf, FaultInjectionConf, LogFormat, RateLimitConf, decimal,
    duration,
};
use koguma_api::{InboundSubject, Protocol, ResourceType};
use koguma_proto::v1 as pb;

use super::cluster_policy::MeshPolicies;

/// Kuma's TCP access log line (`pkg/plugins/policies/meshaccesslog/plugin/xds/configurer.go`).
const DEFAULT_TCP_FORMAT: &str = "[%START_TIME%] %RESPONSE_FLAGS% %KUMA_MESH% %KUMA_SOURCE_ADDRESS_WITHOUT_PORT%(%KUMA_SOURCE_SERVICE%)->%UPSTREAM_HOST%(%KUMA_DESTINATION_SERVICE%) took %DURATION%ms, sent %BYTES_SENT% bytes, received: %BYTES_RECEIVED% bytes";

/// Kuma's HTTP access log line.
const DEFAULT_HTTP_FORMAT: &str = "[%START_TIME%] %KUMA_MESH% \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-B3-TRACEID?X-DATADOG-TRACEID)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%KUMA_SOURCE_SERVICE%\" \"%KUMA_DESTINATION_SERVICE%\" \"%KUMA_SOURCE_ADDRESS_WITHOUT_PORT%\" \"%UPSTREAM_HOST%\"";

/// Kuma's `KumaValues`: what its placeholders stand for on one listener.
pub struct KumaValues<'a> {
    pub mesh: &'a str,
    pub zone: &'a str,
    pub source_service: &'a str,
    pub source_ip: &'a str,
    pub destination_service: &'a str,
    /// "INBOUND", "OUTBOUND" or "UNSPECIFIED" (Envoy's names).
    pub direction: &'a str,
    /// HTTP formats by default, else TCP ones.
    pub http: bool,
}

impl KumaValues<'_> {
    fn interpolate(&self, format: &str) -> String {
        format
            .replace("%KUMA_SOURCE_ADDRESS_WITHOUT_PORT%", self.source_ip)
            .replace("%KUMA_SOURCE_ADDRESS%", &format!("{}:0", self.source_ip))
            .replace("%KUMA_SOURCE_SERVICE%", self.source_service)
            .replace("%KUMA_DESTINATION_SERVICE%", self.destination_service)
            .replace("%KUMA_MESH%", self.mesh)
            .replace("%KUMA_TRAFFIC_DIRECTION%", self.direction)
            .replace("%KUMA_ZONE%", self.zone)
            .replace("%KUMA_WORKLOAD%", "")
    }

    fn default_format(&self) -> &'static str {
        if self.http {
            DEFAULT_HTTP_FORMAT
        } else {
            DEFAULT_TCP_FORMAT
        }
    }
}

impl MeshPolicies {
    /// What `from`/`rules` of these types set on the inbound `subject`.
    pub fn listener_for_inbound(
        &self,
        subject: &InboundSubject<'_>,
        mesh: &str,
        values: &KumaValues<'_>,
    ) -> Option<pb::ListenerPolicy> {
        let faults = merge::merged_inbound_by_caller::<FaultInjectionConf>(
            self.of_type(ResourceType::MeshFaultInjection),
            subject,
        )
        .into_iter()
        .map(|(caller, conf)| pb::FaultRule {
            caller: caller.map_or_else(String::new, |s| format!("spiffe://{mesh}/{s}")),
            faults: faults(&conf),
        })
        .collect();
        let limits = self.merged_inbound::<RateLimitConf>(ResourceType::MeshRateLimit, subject);
        let access_logs =
            self.merged_inbound::<AccessLogConf>(ResourceType::MeshAccessLog, subject);
        let (http_rate_limit, tcp_rate_limit) = limits.map(rate_limits).unwrap_or_default();
        listener(pb::ListenerPolicy {
            faults,
            http_rate_limit,
            tcp_rate_limit,
            access_logs: access_logs.map_or_else(Vec::new, |c| access_log(&c, values)),
        })
    }

    /// What `to` entries of these types set on `caller`'s outbound to
    /// `service` (passthrough traffic is Kuma's `pass_through` service).
    pub fn listener_for_caller(
        &self,
        caller: &Caller<'_>,
        service: &str,
        values: &KumaValues<'_>,
    ) -> Option<pb::ListenerPolicy> {
        let faults = self
            .merged::<FaultInjectionConf>(ResourceType::MeshFaultInjection, caller, service)
            .map(|conf| pb::FaultRule {
                caller: String::new(),
                faults: faults(&conf),
            });
        let access_logs =
            self.merged::<AccessLogConf>(ResourceType::MeshAccessLog, caller, service);
        listener(pb::ListenerPolicy {
            faults: faults.into_iter().collect(),
            access_logs: access_logs.map_or_else(Vec::new, |c| access_log(&c, values)),
            ..Default::default()
        })
    }
}

fn listener(policy: pb::ListenerPolicy) -> Option<pb::ListenerPolicy> {
    (policy != pb::ListenerPolicy::default()).then_some(policy)
}

fn faults(conf: &FaultInjectionConf) -> Vec<pb::Fault> {
    let percent = |p: &Option<serde_json::Value>| decimal(p).unwrap_or(0.0);
    conf.http
        .iter()
        .flatten()
        .map(|f| pb::Fault {
            abort_status: f.abort.as_ref().map(|a| a.http_status as u32),
            abort_percent: f.abort.as_ref().map_or(0.0, |a| percent(&a.percentage)),
            delay_ms: f
                .delay
                .as_ref()
                .and_then(|d| duration(&Some(d.value.clone())))
                .map(|d| d.as_millis() as u64),
            delay_percent: f.delay.as_ref().map_or(0.0, |d| percent(&d.percentage)),
            bandwidth_kbps: f.response_bandwidth.as_ref().and_then(|b| b.kbps()),
            bandwidth_percent: f
                .response_bandwidth
                .as_ref()
                .map_or(0.0, |b| percent(&b.percentage)),
        })
        .collect()
}

/// The HTTP and TCP buckets, unless disabled or without a rate.
fn rate_limits(conf: RateLimitConf) -> (Option<pb::RateLimit>, Option<pb::RateLimit>) {
    let local = conf.local.unwrap_or_default();
    let http = local
        .http
        .filter(|h| h.disabled != Some(true))
        .and_then(|h| {
            let (num, interval) = h.request_rate.as_ref()?.per()?;
            let on = h.on_rate_limit.unwrap_or_default();
            let headers = on.headers.unwrap_or_default();
            let pairs = |list: Vec<koguma_api::headers::HeaderKeyValue>, append| {
                list.into_iter()
                    .map(|h| pb::HeaderValue {
                        name: h.name.to_ascii_lowercase(),
                        value: h.value,
                        append,
                    })
                    .collect()
            };
            Some(pb::RateLimit {
                num,
                interval_ms: interval.as_millis() as u64,
                status: on.status.unwrap_or(0),
                set_headers: pairs(headers.set, false),
                add_headers: pairs(headers.add, true),
            })
        });
    let tcp = local
        .tcp
        .filter(|t| t.disabled != Some(true))
        .and_then(|t| {
            let (num, interval) = t.connection_rate.as_ref()?.per()?;
            Some(pb::RateLimit {
                num,
                interval_ms: interval.as_millis() as u64,
                ..Default::default()
            })
        });
    (http, tcp)
}

fn access_log(conf: &AccessLogConf, values: &KumaValues<'_>) -> Vec<pb::AccessLogBackend> {
    conf.backends
        .iter()
        .flatten()
        .filter_map(|b| backend(b, values))
        .collect()
}

fn backend(b: &AccessLogBackend, values: &KumaValues<'_>) -> Option<pb::AccessLogBackend> {
    use pb::access_log_backend::Sink;
    let kv = |list: &[koguma_api::policy::LogFormatEntry]| -> Vec<pb::HeaderValue> {
        list.iter()
            .map(|e| pb::HeaderValue {
                name: e.key.clone(),
                value: values.interpolate(&e.value),
                append: false,
            })
            .collect()
    };
    let mut out = pb::AccessLogBackend::default();
    let format: Option<&LogFormat> = match b.kind.as_str() {
        "File" => {
            let f = b.file.as_ref()?;
            out.sink = Some(Sink::File(f.path.clone()));
            f.format.as_ref()
        }
        "Tcp" => {
            let t = b.tcp.as_ref()?;
            let (host, port) = koguma_api::policy::split_address(&t.address, None)?;
            out.sink = Some(Sink::Tcp(format!("{host}:{port}")));
            t.format.as_ref()
        }
        "OpenTelemetry" => {
            let o = b.open_telemetry.as_ref()?;
            let (host, port) = koguma_api::policy::split_address(&o.endpoint, Some(4317))?;
            out.sink = Some(Sink::Otel(format!("{host}:{port}")));
            out.otel_attributes = kv(&o.attributes);
            let mut resource = vec![pb::HeaderValue {
                name: "kuma.mesh".into(),
                value: values.mesh.to_string(),
                append: false,
            }];
            if !values.zone.is_empty() {
                resource.push(pb::HeaderValue {
                    name: "kuma.zone".into(),
                    value: values.zone.to_string(),
                    append: false,
                });
            }
            out.otel_resource = resource;
            let body = match &o.body {
                Some(serde_json::Value::String(s)) => s.as_str(),
                _ => values.default_format(),
            };
            out.plain = values.interpolate(body);
            return Some(out);
        }
        _ => return None,
    };
    match format {
        Some(f) if f.kind == "Json" => {
            out.json = kv(f.json.as_deref().unwrap_or_default());
            out.omit_empty_values = f.omit_empty_values;
        }
        Some(f) => {
            out.plain = format!("{}\n", values.interpolate(f.plain.as_deref().unwrap_or("")));
            out.omit_empty_values = f.omit_empty_values;
        }
        None => out.plain = format!("{}\n", values.interpolate(values.default_format())),
    }
    Some(out)
}

/// The Kuma values of a dataplane's listeners: its first inbound's
/// service and zone, and its address.
pub fn dataplane_values(net: &koguma_api::Networking) -> (&str, &str, &str) {
    let first = net.inbound.first();
    let service = first.map_or("unknown", |i| i.service());
    let zone = first
        .and_then(|i| i.tags.get(koguma_api::tags::ZONE))
        .map_or("", String::as_str);
    (service, zone, net.address.as_str())
}

/// Whether a protocol's default access log format is the HTTP one.
pub fn is_http(protocol: Protocol) -> bool {
    !matches!(protocol, Protocol::Tcp)
}
