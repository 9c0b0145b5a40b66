//! `MeshAccessLog`: a line per request or connection, to a file, a TCP
//! collector or an OpenTelemetry collector
//! (`pkg/plugins/policies/meshaccesslog`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PolicyConf;
use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<AccessLogBackend>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogBackend {
    /// `File`, `Tcp` or `OpenTelemetry`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry: Option<OtelBackend>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileBackend {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpBackend {
    /// "host:port" (Kuma also writes it "tcp://host:port").
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelBackend {
    /// "host:port"; port 4317 when left out.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<LogFormatEntry>,
    /// The log record's body: a string (a format) or an OTLP AnyValue as
    /// JSON; Kuma's default format when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// A MeshOpenTelemetryBackend: a resource Koguma does not have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogFormat {
    /// `Plain` or `Json`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Vec<LogFormatEntry>>,
    #[serde(default)]
    pub omit_empty_values: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogFormatEntry {
    pub key: String,
    pub value: String,
}

/// Kuma's placeholders, which the CP fills in per listener.
pub const KUMA_PLACEHOLDERS: &[&str] = &[
    "%KUMA_SOURCE_ADDRESS_WITHOUT_PORT%",
    "%KUMA_SOURCE_ADDRESS%",
    "%KUMA_SOURCE_SERVICE%",
    "%KUMA_DESTINATION_SERVICE%",
    "%KUMA_MESH%",
    "%KUMA_TRAFFIC_DIRECTION%",
    "%KUMA_ZONE%",
    "%KUMA_WORKLOAD%",
];

/// Checks a format string's operators (Kuma's placeholders aside).
fn check_format_text(field: String, text: &str, errs: &mut ValidationError) {
    let mut plain = text.to_string();
    for p in KUMA_PLACEHOLDERS {
        plain = plain.replace(p, "-");
    }
    if let Err(e) = koguma_types::log_format::parse(&plain) {
        errs.add(field, e.to_string());
    }
}

impl LogFormat {
    fn validate(&self, field: &str, errs: &mut ValidationError) {
        match self.kind.as_str() {
            "Plain" => match &self.plain {
                None => errs.add(format!("{field}.plain"), "must be defined"),
                Some(p) if p.is_empty() => errs.add(format!("{field}.plain"), "must not be empty"),
                Some(p) => check_format_text(format!("{field}.plain"), p, errs),
            },
            "Json" => match &self.json {
                None => errs.add(format!("{field}.json"), "must be defined"),
                Some(j) if j.is_empty() => errs.add(format!("{field}.json"), "must not be empty"),
                Some(entries) => {
                    for (i, e) in entries.iter().enumerate() {
                        if e.key.is_empty() {
                            errs.add(format!("{field}.json[{i}].key"), "key cannot be empty");
                        }
                        if e.value.is_empty() {
                            errs.add(format!("{field}.json[{i}].value"), "value cannot be empty");
                        }
                        check_format_text(format!("{field}.json[{i}].value"), &e.value, errs);
                    }
                }
            },
            other => errs.add(
                format!("{field}.type"),
                format!("{other:?} is not one of Plain, Json"),
            ),
        }
    }
}

/// "host:port" with a port; `default_port` when one may be left out.
pub fn split_address(address: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let address = address
        .strip_prefix("tcp://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address)
        .trim_end_matches('/');
    if address.is_empty() || address.contains(['/', ' ']) {
        return None;
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.is_empty() => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((host.to_string(), port.parse().ok()?))
        }
        Some(_) => None,
        None => Some((address.to_string(), default_port?)),
    }
}

/// Kuma's rule for OpenTelemetry attribute keys.
fn otel_key_valid(key: &str) -> bool {
    let b = key.as_bytes();
    !key.is_empty()
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'_')
        && !key.contains("..")
        && !key.contains("__")
        && !key.contains("._")
        && !key.contains("_.")
}

impl AccessLogBackend {
    fn validate(&self, field: &str, errs: &mut ValidationError) {
        let missing = |section: &str, errs: &mut ValidationError| {
            errs.add(format!("{field}.{section}"), "must be defined")
        };
        match self.kind.as_str() {
            "File" => match &self.file {
                None => missing("file", errs),
                Some(f) => {
                    if !f.path.starts_with('/') || f.path.contains('\0') || f.path.ends_with('/') {
                        errs.add(
                            format!("{field}.file.path"),
                            format!("file backend requires a valid path, got {:?} (an absolute path to a file)", f.path),
                        );
                    }
                    if let Some(format) = &f.format {
                        format.validate(&format!("{field}.file.format"), errs);
                    }
                }
            },
            "Tcp" => match &self.tcp {
                None => missing("tcp", errs),
                Some(t) => {
                    if split_address(&t.address, None).is_none() {
                        errs.add(
                            format!("{field}.tcp.address"),
                            format!(
                                "tcp backend requires valid address, got {:?} (host:port)",
                                t.address
                            ),
                        );
                    }
                    if let Some(format) = &t.format {
                        format.validate(&format!("{field}.tcp.format"), errs);
                    }
                }
            },
            "OpenTelemetry" => match &self.open_telemetry {
                None => missing("openTelemetry", errs),
                Some(o) => {
                    let at = format!("{field}.openTelemetry");
                    if o.backend_ref.is_some() {
                        errs.add(
                            format!("{at}.backendRef"),
                            "is not supported by this version of koguma (MeshOpenTelemetryBackend): set endpoint",
                        );
                    } else if split_address(&o.endpoint, Some(4317)).is_none() {
                        errs.add(
                            format!("{at}.endpoint"),
                            format!("must be host or host:port, got {:?}", o.endpoint),
                        );
                    }
                    for (i, a) in o.attributes.iter().enumerate() {
                        if a.key.contains('%') {
                            errs.add(format!("{at}.attributes[{i}].key"), "must be a static OpenTelemetry attribute name; placeholders are only supported in values");
                        } else if a.key.starts_with("otel.") {
                            errs.add(
                                format!("{at}.attributes[{i}].key"),
                                "must not use the reserved OpenTelemetry prefix 'otel.'",
                            );
                        } else if !otel_key_valid(&a.key) {
                            errs.add(format!("{at}.attributes[{i}].key"), "must start with a lowercase letter, use only lowercase letters, digits, '.' or '_', avoid consecutive delimiters, and end with a letter or digit");
                        }
                        check_format_text(format!("{at}.attributes[{i}].value"), &a.value, errs);
                    }
                    match &o.body {
                        None => {}
                        Some(Value::String(body)) => {
                            check_format_text(format!("{at}.body"), body, errs)
                        }
                        Some(_) => errs.add(
                            format!("{at}.body"),
                            "is supported by this version of koguma as a string (a format) only, not as an OTLP AnyValue",
                        ),
                    }
                }
            },
            other => errs.add(
                format!("{field}.type"),
                format!("{other:?} is not one of File, Tcp, OpenTelemetry"),
            ),
        }
    }
}

impl PolicyConf for AccessLogConf {
    const INBOUND: bool = true;

    fn validate(&self, field: &str, errs: &mut ValidationError) {
        let Some(backends) = &self.backends else {
            errs.add(format!("{field}.backends"), "must be defined");
            return;
        };
        for (i, b) in backends.iter().enumerate() {
            b.validate(&format!("{field}.backends[{i}]"), errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_address;

    #[test]
    fn addresses_take_a_port_or_the_default() {
        assert_eq!(
            split_address("127.0.0.1:5000", None),
            Some(("127.0.0.1".into(), 5000))
        );
        assert_eq!(
            split_address("tcp://logs:514", None),
            Some(("logs".into(), 514))
        );
        assert_eq!(
            split_address("otel-collector", Some(4317)),
            Some(("otel-collector".into(), 4317))
        );
        assert_eq!(split_address("logs", None), None);
        assert_eq!(split_address("logs:x", None), None);
    }
}
