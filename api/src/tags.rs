//! Well-known tags, the protocols `kuma.io/protocol` selects, and Kuma's
//! rules for tag maps (`validators.go`: `ValidateTags`).

use std::collections::BTreeMap;

use crate::validation::ValidationError;

pub const SERVICE: &str = "kuma.io/service";
/// The zone of an inbound (stamped by its zone CP): its locality.
pub const ZONE: &str = "kuma.io/zone";
pub const PROTOCOL: &str = koguma_types::PROTOCOL_TAG;

pub use koguma_types::Protocol;

/// The values Kuma accepts for `kuma.io/protocol` (`SupportedProtocols`).
/// `kafka` is carried as TCP.
pub const KNOWN_PROTOCOLS: [&str; 5] = ["grpc", "http", "http2", "kafka", "tcp"];

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

/// `path["key"]`, the way Kuma names one entry of a map.
pub fn key_path(path: &str, key: &str) -> String {
    format!("{path}[{key:?}]")
}

/// What a tag map must hold besides well-formed entries.
#[derive(Debug, Clone, Copy, Default)]
pub struct TagRules {
    /// `kuma.io/service` must be present ("mandatory tag ... is missing").
    pub require_service: bool,
    /// `kuma.io/protocol`, when present, must be one of Kuma's protocols.
    pub check_protocol: bool,
    /// A selector (Kuma's `ValidateSelector`): values may also hold `/`, or
    /// be `*`.
    pub selector: bool,
}

/// Kuma's `ValidateTags`: every key and value non-empty and of the tag
/// charset, in key order, each error at `path["key"]`.
pub fn validate_tags(
    path: &str,
    tags: &BTreeMap<String, String>,
    rules: TagRules,
    errs: &mut ValidationError,
) {
    if rules.check_protocol
        && let Some(value) = tags.get(PROTOCOL)
        && !KNOWN_PROTOCOLS.contains(&value.as_str())
    {
        errs.add(
            key_path(path, PROTOCOL),
            format!(
                "tag {PROTOCOL:?} has an invalid value {value:?}. Allowed values: {}",
                KNOWN_PROTOCOLS.join(", ")
            ),
        );
    }
    for (key, value) in tags {
        if key.is_empty() {
            errs.add(path, "tag name must be non-empty");
        } else if !valid_tag_key(key) {
            errs.add(
                key_path(path, key),
                "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores",
            );
        }
        if value.is_empty() {
            errs.add(key_path(path, key), "tag value must be non-empty");
        } else if rules.selector {
            let ok = value == "*"
                || value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b));
            if !ok {
                errs.add(
                    key_path(path, key),
                    r#"tag value must consist of alphanumeric characters, dots, dashes, slashes and underscores or be "*""#,
                );
            }
        } else if !valid_tag_value(value) {
            errs.add(
                key_path(path, key),
                "tag value must consist of alphanumeric characters, dots, dashes and underscores",
            );
        }
    }
    if rules.require_service && !tags.contains_key(SERVICE) {
        errs.add(path, format!("mandatory tag {SERVICE:?} is missing"));
    }
}

/// Reads a tag map in which a key without a value (`version:` in YAML,
/// `null` in JSON) is the empty string, as Kuma's protobuf maps read it; the
/// validation then says the value must be non-empty.
pub fn deserialize_tags<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: BTreeMap<String, Option<String>> = serde::Deserialize::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}
