//! Well-known tags and the protocols `kuma.io/protocol` selects.

use std::collections::BTreeMap;

pub const SERVICE: &str = "kuma.io/service";
pub const PROTOCOL: &str = "kuma.io/protocol";

/// What a service speaks. Kuma treats any value it does not know as tcp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Http,
    Http2,
    Grpc,
}

impl Protocol {
    pub fn from_tag(value: Option<&str>) -> Protocol {
        match value {
            Some("http") => Protocol::Http,
            Some("http2") => Protocol::Http2,
            Some("grpc") => Protocol::Grpc,
            _ => Protocol::Tcp,
        }
    }

    pub fn from_tags(tags: &BTreeMap<String, String>) -> Protocol {
        Protocol::from_tag(tags.get(PROTOCOL).map(String::as_str))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Tag keys: `^[a-zA-Z0-9.\-_:/]*$` (Kuma's `tagNameCharset`).
pub fn valid_tag_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b))
}

/// Tag values: `^[a-zA-Z0-9.\-_:]*$` (Kuma's `tagValueCharset`).
pub fn valid_tag_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
}
