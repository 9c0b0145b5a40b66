//! Wire types of the Koguma control-plane stream (`koguma.v1`).

#![allow(clippy::derive_partial_eq_without_eq)]

mod delta;
pub mod json;

pub use delta::{ConfigDigest, apply as apply_delta, cluster_hash, diff, version};

pub mod v1 {
    tonic::include_proto!("koguma.v1");
}
