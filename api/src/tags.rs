//! Well-known tags and the protocols `kuma.io/protocol` selects.

pub const SERVICE: &str = "kuma.io/service";
/// The zone of an inbound (stamped by its zone CP): its locality.
pub const ZONE: &str = "kuma.io/zone";
pub const PROTOCOL: &str = koguma_types::PROTOCOL_TAG;

pub use koguma_types::Protocol;

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
