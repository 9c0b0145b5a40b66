//! A record rendered in its format: Envoy's text for each operator, "-"
//! for a value the record does not have (`null` in a JSON format).

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::OnceLock;

use koguma_types::log_format::{Header, Operator, Piece};

use super::{ListenerLog, LogRecord};
use crate::config::LogFormat;

/// Appends the line of `record` in `format` to `out`.
pub fn line(format: &LogFormat, log: &ListenerLog, record: &LogRecord, out: &mut String) {
    match format {
        LogFormat::Plain(pieces) => text(pieces, log, record, out),
        LogFormat::Json {
            entries,
            omit_empty,
        } => {
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (key, pieces) in entries {
                let v = json_value(pieces, log, record);
                if *omit_empty && (v.is_null() || v.as_str().is_some_and(str::is_empty)) {
                    continue;
                }
                map.insert(key.clone(), v);
            }
            let _ = write!(out, "{}", serde_json::Value::Object(map));
            out.push('\n');
        }
        LogFormat::Otel { body, .. } => text(body, log, record, out),
    }
}

/// The pieces as text.
pub fn text(pieces: &[Piece], log: &ListenerLog, record: &LogRecord, out: &mut String) {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Op(op) => out.push_str(&value(op, log, record).unwrap_or(Cow::Borrowed("-"))),
        }
    }
}

/// A JSON value: a number or `null` for a lone numeric operator, else text.
fn json_value(pieces: &[Piece], log: &ListenerLog, record: &LogRecord) -> serde_json::Value {
    if let [Piece::Op(op)] = pieces {
        return match value(op, log, record) {
            None => serde_json::Value::Null,
            Some(v) if op.is_number() => v
                .parse::<u64>()
                .map_or_else(|_| v.as_ref().into(), serde_json::Value::from),
            Some(v) => v.into_owned().into(),
        };
    }
    let mut s = String::new();
    text(pieces, log, record, &mut s);
    s.into()
}

fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
    })
}

fn ms(d: std::time::Duration) -> String {
    d.as_millis().to_string()
}

fn value<'a>(op: &Operator, log: &ListenerLog, r: &'a LogRecord) -> Option<Cow<'a, str>> {
    let owned = |s: String| Some(Cow::Owned(s));
    match op {
        Operator::StartTime => owned(humantime::format_rfc3339_millis(r.start).to_string()),
        Operator::Duration => owned(ms(r.duration)),
        Operator::RequestDuration => None,
        Operator::ResponseDuration => r.response_duration.map(ms).map(Cow::Owned),
        // Envoy writes 0 for a connection that was not a request.
        Operator::ResponseCode => owned(r.http.as_ref().map_or(0, |h| h.status).to_string()),
        Operator::ResponseCodeDetails => Some(Cow::Borrowed(r.details)),
        Operator::ResponseFlags => Some(Cow::Borrowed(r.flags)),
        Operator::BytesReceived => owned(r.bytes_received.to_string()),
        Operator::BytesSent => owned(r.bytes_sent.to_string()),
        Operator::Protocol => r.http.as_ref().map(|h| {
            Cow::Borrowed(match h.version {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_3 => "HTTP/3",
                _ => "HTTP/1.1",
            })
        }),
        Operator::Req(h) => header(h, log, r, true),
        Operator::Resp(h) => header(h, log, r, false),
        Operator::UpstreamHost => r.upstream.map(|a| Cow::Owned(a.to_string())),
        Operator::UpstreamCluster => Some(Cow::Owned(log.cluster.to_string())),
        Operator::UpstreamLocalAddress => None,
        Operator::UpstreamTransportFailureReason => r.failure.as_deref().map(Cow::Borrowed),
        Operator::DownstreamRemoteAddress => r.downstream.remote.map(|a| Cow::Owned(a.to_string())),
        Operator::DownstreamRemoteAddressWithoutPort => {
            r.downstream.remote.map(|a| Cow::Owned(a.ip().to_string()))
        }
        Operator::DownstreamLocalAddress => r.downstream.local.map(|a| Cow::Owned(a.to_string())),
        Operator::DownstreamLocalAddressWithoutPort => {
            r.downstream.local.map(|a| Cow::Owned(a.ip().to_string()))
        }
        Operator::DownstreamPeerUriSan => {
            (!r.peer_uris.is_empty()).then(|| Cow::Owned(r.peer_uris.join(",")))
        }
        Operator::RequestedServerName => r.sni.as_deref().map(Cow::Borrowed),
        Operator::ConnectionId => owned(r.downstream.id.to_string()),
        Operator::Hostname => Some(Cow::Borrowed(hostname())),
    }
}

fn header<'a>(
    h: &Header,
    log: &ListenerLog,
    r: &'a LogRecord,
    request: bool,
) -> Option<Cow<'a, str>> {
    let http = r.http.as_ref()?;
    let one = |name: &str| -> Option<Cow<'a, str>> {
        if request {
            match name {
                ":method" => return Some(Cow::Borrowed(http.method.as_str())),
                ":path" => {
                    return http.uri.path_and_query().map(|p| Cow::Borrowed(p.as_str()));
                }
                ":authority" => {
                    return http
                        .authority
                        .as_ref()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()));
                }
                ":scheme" => {
                    return http
                        .uri
                        .scheme_str()
                        .map(Cow::Borrowed)
                        .or(Some(Cow::Borrowed("http")));
                }
                _ => {}
            }
        }
        let (names, values) = if request {
            (&log.req_headers, &http.req)
        } else {
            (&log.resp_headers, &http.resp)
        };
        let i = names.iter().position(|n| n.as_str() == name)?;
        values
            .get(i)?
            .as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
    };
    let v = one(&h.name).or_else(|| h.alternative.as_deref().and_then(one))?;
    match h.max {
        Some(max) if v.chars().count() > max => Some(Cow::Owned(v.chars().take(max).collect())),
        _ => Some(v),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::HeaderValue;
    use koguma_types::log_format::parse;

    use super::*;
    use crate::access_log::{Downstream, HttpRecord};
    use crate::authz::Peer;

    fn record() -> (ListenerLog, LogRecord) {
        let log = ListenerLog {
            entries: Vec::new(),
            req_headers: vec![http::HeaderName::from_static("user-agent")],
            resp_headers: Vec::new(),
            cluster: "backend".into(),
        };
        let downstream = Downstream::new(
            Some("10.0.0.1:40000".parse().unwrap()),
            Some("10.0.0.2:10001".parse().unwrap()),
        );
        let started = (
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            std::time::Instant::now(),
        );
        let mut r = LogRecord::connection(downstream, &Peer::Unauthenticated, started);
        r.duration = Duration::from_millis(42);
        r.bytes_sent = 11;
        r.upstream = Some("10.0.0.3:8080".parse().unwrap());
        r.http = Some(HttpRecord {
            method: http::Method::POST,
            uri: "/items?page=2".parse().unwrap(),
            version: http::Version::HTTP_11,
            authority: Some(HeaderValue::from_static("backend.mesh")),
            status: 201,
            req: vec![Some(HeaderValue::from_static("curl/8.5.0"))],
            resp: Vec::new(),
        });
        (log, r)
    }

    #[test]
    fn plain_lines_render_envoys_operators() {
        let (log, r) = record();
        let format = LogFormat::Plain(
            parse("[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_SENT% %DURATION% \"%REQ(USER-AGENT):4%\" \"%REQ(X-REQUEST-ID)%\" %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_HOST% %UPSTREAM_CLUSTER%\n").unwrap(),
        );
        let mut out = String::new();
        line(&format, &log, &r, &mut out);
        assert_eq!(
            out,
            "[2023-11-14T22:13:20.123Z] \"POST /items?page=2 HTTP/1.1\" 201 - 11 42 \"curl\" \"-\" 10.0.0.1 10.0.0.3:8080 backend\n"
        );
    }

    #[test]
    fn json_lines_type_lone_numbers_and_omit_what_is_missing_when_asked() {
        let (log, r) = record();
        let entries = vec![
            ("status".to_string(), parse("%RESPONSE_CODE%").unwrap()),
            (
                "what".to_string(),
                parse("%REQ(:METHOD)% %REQ(:AUTHORITY)%").unwrap(),
            ),
            ("id".to_string(), parse("%REQ(X-REQUEST-ID)%").unwrap()),
        ];
        for (omit_empty, want) in [
            (
                false,
                r#"{"id":null,"status":201,"what":"POST backend.mesh"}"#,
            ),
            (true, r#"{"status":201,"what":"POST backend.mesh"}"#),
        ] {
            let format = LogFormat::Json {
                entries: entries.clone(),
                omit_empty,
            };
            let mut out = String::new();
            line(&format, &log, &r, &mut out);
            assert_eq!(out, format!("{want}\n"));
        }
    }
}
