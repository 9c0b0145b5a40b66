//! Wire types of the Koguma control-plane stream (`koguma.v1`).

#![allow(clippy::derive_partial_eq_without_eq)]

pub mod json;

pub mod v1 {
    tonic::include_proto!("koguma.v1");
}
