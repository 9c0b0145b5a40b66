//! Wire types of the Koguma control-plane stream (`koguma.v1`).

#![allow(clippy::derive_partial_eq_without_eq)]

pub mod channel;
mod delta;
pub mod json;

pub use delta::{ConfigDigest, apply as apply_delta, cluster_hash, diff, policy_hash, version};

pub mod v1 {
    tonic::include_proto!("koguma.v1");
}

/// The wire's encoding of the shared vocabulary (`koguma_types`), both ways:
/// the one place each is converted.
impl From<koguma_types::Protocol> for v1::Protocol {
    fn from(p: koguma_types::Protocol) -> v1::Protocol {
        match p {
            koguma_types::Protocol::Tcp => v1::Protocol::Tcp,
            koguma_types::Protocol::Http => v1::Protocol::Http,
            koguma_types::Protocol::Http2 => v1::Protocol::Http2,
            koguma_types::Protocol::Grpc => v1::Protocol::Grpc,
        }
    }
}

/// The protocol a wire value stands for; `None` for a value this build
/// does not know (a newer CP's).
pub fn protocol(wire: i32) -> Option<koguma_types::Protocol> {
    Some(match v1::Protocol::try_from(wire).ok()? {
        v1::Protocol::Tcp => koguma_types::Protocol::Tcp,
        v1::Protocol::Http => koguma_types::Protocol::Http,
        v1::Protocol::Http2 => koguma_types::Protocol::Http2,
        v1::Protocol::Grpc => koguma_types::Protocol::Grpc,
    })
}

impl From<koguma_types::MtlsMode> for v1::MtlsMode {
    fn from(m: koguma_types::MtlsMode) -> v1::MtlsMode {
        match m {
            koguma_types::MtlsMode::Strict => v1::MtlsMode::Strict,
            koguma_types::MtlsMode::Permissive => v1::MtlsMode::Permissive,
        }
    }
}

/// The mode a wire value stands for; `None` for one this build does not know.
pub fn mtls_mode(wire: i32) -> Option<koguma_types::MtlsMode> {
    Some(match v1::MtlsMode::try_from(wire).ok()? {
        v1::MtlsMode::Strict => koguma_types::MtlsMode::Strict,
        v1::MtlsMode::Permissive => koguma_types::MtlsMode::Permissive,
    })
}

impl From<koguma_types::PermissionAction> for v1::PermissionAction {
    fn from(a: koguma_types::PermissionAction) -> v1::PermissionAction {
        match a {
            koguma_types::PermissionAction::Allow => v1::PermissionAction::Allow,
            koguma_types::PermissionAction::Deny => v1::PermissionAction::Deny,
            koguma_types::PermissionAction::AllowWithShadowDeny => {
                v1::PermissionAction::AllowWithShadowDeny
            }
        }
    }
}

/// The action a wire value stands for; `None` for one this build does not
/// know.
pub fn permission_action(wire: i32) -> Option<koguma_types::PermissionAction> {
    Some(match v1::PermissionAction::try_from(wire).ok()? {
        v1::PermissionAction::Allow => koguma_types::PermissionAction::Allow,
        v1::PermissionAction::Deny => koguma_types::PermissionAction::Deny,
        v1::PermissionAction::AllowWithShadowDeny => {
            koguma_types::PermissionAction::AllowWithShadowDeny
        }
    })
}
