//! A listener's faults, rate limits and access logs from the wire into
//! the forwarder's typed form: statuses and headers checked, formats
//! parsed. What cannot run is refused with the listener named.

use std::time::Duration;

use http::StatusCode;
use koguma_forwarder as fwd;
use koguma_proto::v1 as pb;
use koguma_types::log_format;

pub fn listener_traffic(
    p: Option<&pb::ListenerPolicy>,
    listener: &str,
) -> Result<fwd::ListenerTrafficConfig, String> {
    let Some(p) = p else {
        return Ok(fwd::ListenerTrafficConfig::default());
    };
    let faults = p
        .faults
        .iter()
        .map(|r| {
            Ok(fwd::FaultRule {
                caller: Some(r.caller.clone()).filter(|c| !c.is_empty()),
                faults: r
                    .faults
                    .iter()
                    .map(|f| fault(f, listener))
                    .collect::<Result<_, String>>()?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(fwd::ListenerTrafficConfig {
        faults,
        http_rate_limit: p
            .http_rate_limit
            .as_ref()
            .map(|r| rate_limit(r, listener))
            .transpose()?,
        tcp_rate_limit: p
            .tcp_rate_limit
            .as_ref()
            .map(|r| rate_limit(r, listener))
            .transpose()?,
        access_logs: access_logs(&p.access_logs, listener)?,
    })
}

fn fault(f: &pb::Fault, listener: &str) -> Result<fwd::Fault, String> {
    let abort = f
        .abort_status
        .map(|s| {
            u16::try_from(s)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .map(|status| (status, f.abort_percent))
                .ok_or_else(|| format!("{listener}: fault abort status {s} is not an HTTP status"))
        })
        .transpose()?;
    Ok(fwd::Fault {
        delay: f
            .delay_ms
            .map(|ms| (Duration::from_millis(ms), f.delay_percent)),
        abort,
        // Envoy's limit_kbps is KiB/s.
        bandwidth: f
            .bandwidth_kbps
            .map(|k| (k.saturating_mul(1024), f.bandwidth_percent)),
    })
}

fn rate_limit(r: &pb::RateLimit, listener: &str) -> Result<fwd::RateLimitConfig, String> {
    if r.num == 0 || r.interval_ms == 0 {
        return Err(format!(
            "{listener}: rate limit of {} per {} ms cannot be enforced",
            r.num, r.interval_ms
        ));
    }
    let status = match r.status {
        0 => StatusCode::TOO_MANY_REQUESTS,
        s => u16::try_from(s)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| format!("{listener}: rate limit status {s} is not an HTTP status"))?,
    };
    let at = format!("{listener}: rate limit");
    let headers = r
        .set_headers
        .iter()
        .chain(&r.add_headers)
        .map(|h| crate::route_config::header(h, &at).map(|(n, v)| (n, v, h.append)))
        .collect::<Result<_, String>>()?;
    Ok(fwd::RateLimitConfig {
        num: r.num,
        interval: Duration::from_millis(r.interval_ms),
        status,
        headers,
    })
}

fn parse(text: &str, listener: &str) -> Result<Vec<log_format::Piece>, String> {
    log_format::parse(text).map_err(|e| format!("{listener}: access log format: {e}"))
}

fn pairs(
    list: &[pb::HeaderValue],
    listener: &str,
) -> Result<Vec<(String, Vec<log_format::Piece>)>, String> {
    list.iter()
        .map(|e| Ok((e.name.clone(), parse(&e.value, listener)?)))
        .collect()
}

pub fn access_logs(
    list: &[pb::AccessLogBackend],
    listener: &str,
) -> Result<Vec<fwd::AccessLogConfig>, String> {
    use pb::access_log_backend::Sink;
    list.iter()
        .map(|b| {
            let json = || -> Result<fwd::LogFormat, String> {
                Ok(if b.json.is_empty() {
                    fwd::LogFormat::Plain(parse(&b.plain, listener)?)
                } else {
                    fwd::LogFormat::Json {
                        entries: pairs(&b.json, listener)?,
                        omit_empty: b.omit_empty_values,
                    }
                })
            };
            let (sink, format) = match &b.sink {
                Some(Sink::File(path)) => {
                    if !path.starts_with('/') {
                        return Err(format!(
                            "{listener}: access log file {path:?} is not an absolute path"
                        ));
                    }
                    (fwd::SinkConfig::File(path.into()), json()?)
                }
                Some(Sink::Tcp(addr)) => (fwd::SinkConfig::Tcp(addr.clone()), json()?),
                Some(Sink::Otel(endpoint)) => (
                    fwd::SinkConfig::Otel {
                        endpoint: endpoint.clone(),
                        resource: b
                            .otel_resource
                            .iter()
                            .map(|h| (h.name.clone(), h.value.clone()))
                            .collect(),
                    },
                    fwd::LogFormat::Otel {
                        body: parse(&b.plain, listener)?,
                        attributes: pairs(&b.otel_attributes, listener)?,
                    },
                ),
                None => return Err(format!("{listener}: an access log backend has no sink")),
            };
            Ok(fwd::AccessLogConfig { sink, format })
        })
        .collect()
}
