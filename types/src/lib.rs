//! The vocabulary every layer speaks: the resource model reads it from
//! resources and tags, the wire carries it, the data path acts on it. Defined once here;
//! the wire's encoding of it lives with the wire (`koguma-proto`).

use std::collections::BTreeMap;

pub mod log_format;
pub mod sni;

/// The tag that names a service's protocol.
pub const PROTOCOL_TAG: &str = "kuma.io/protocol";

/// What a service speaks. Kuma treats any value it does not know as tcp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
        Protocol::from_tag(tags.get(PROTOCOL_TAG).map(String::as_str))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }

    /// Whether requests are proxied at L7.
    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }

    /// Whether the upstream hop speaks HTTP/2 (prior knowledge).
    pub fn upstream_h2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

/// Mesh mTLS on inbounds: Strict refuses plaintext; Permissive accepts it
/// too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MtlsMode {
    #[default]
    Strict,
    Permissive,
}

impl MtlsMode {
    /// Kuma's spelling in a Mesh.
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Strict => "STRICT",
            MtlsMode::Permissive => "PERMISSIVE",
        }
    }

    /// Kuma writes `STRICT`; its newer policies write `Strict`: both are taken.
    pub fn parse(s: &str) -> Option<MtlsMode> {
        match s.to_ascii_uppercase().as_str() {
            "STRICT" => Some(MtlsMode::Strict),
            "PERMISSIVE" => Some(MtlsMode::Permissive),
            _ => None,
        }
    }
}

/// What a MeshTrafficPermission rule does with a caller it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PermissionAction {
    Allow,
    Deny,
    /// Allowed, and logged and counted as "would be denied".
    AllowWithShadowDeny,
}

impl PermissionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionAction::Allow => "Allow",
            PermissionAction::Deny => "Deny",
            PermissionAction::AllowWithShadowDeny => "AllowWithShadowDeny",
        }
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for MtlsMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for MtlsMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        MtlsMode::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown mode {s:?}: expected STRICT or PERMISSIVE"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_are_tcp_and_names_round_trip() {
        for p in [
            Protocol::Tcp,
            Protocol::Http,
            Protocol::Http2,
            Protocol::Grpc,
        ] {
            assert_eq!(Protocol::from_tag(Some(p.as_str())), p);
        }
        assert_eq!(Protocol::from_tag(Some("kafka")), Protocol::Tcp);
        assert_eq!(Protocol::from_tag(None), Protocol::Tcp);
        assert_eq!(MtlsMode::parse("Permissive"), Some(MtlsMode::Permissive));
        assert_eq!(
            MtlsMode::parse(MtlsMode::Strict.as_str()),
            Some(MtlsMode::Strict)
        );
        assert_eq!(MtlsMode::parse("loose"), None);
    }
}
