//! Wire types of the Koguma control-plane stream (`koguma.v1`).

#![allow(clippy::derive_partial_eq_without_eq)]

mod delta;
pub mod json;

pub use delta::{ConfigDigest, apply as apply_delta, cluster_hash, diff, version};

pub mod v1 {
    tonic::include_proto!("koguma.v1");
}

/// The wire's encoding of `koguma_types::Protocol`, both ways.
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
