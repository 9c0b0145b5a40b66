//! Multi-zone sync between a global CP and its zone CPs (Kuma's KDS, over
//! one gRPC stream per zone, TLS, authenticated with a zone token).
//!
//! What flows where is each type's `KdsSync` in the resource-type registry:
//! the global sends meshes, policies, the meshes' CAs and other zones'
//! ingresses; a zone sends its dataplanes, zone ingresses and egresses.
//! `side` is what differs between the two ends; `session` is the loop they
//! share; `global` and `zone` set a stream up on each end.

pub mod global;
mod hash;
pub mod insights;
mod outgoing;
mod receive;
mod session;
#[cfg(test)]
mod session_tests;
mod side;
pub mod zone;

use std::sync::Arc;

use crate::dp_server::status::StatusRegistry;
use crate::mesh_ca::MeshCas;
use crate::resources::Resources;
use insights::RemoteInsights;

/// What this control plane holds that the sync reads and writes.
pub struct LocalState {
    pub resources: Arc<Resources>,
    pub cas: Arc<MeshCas>,
    /// This CP's own dataplanes' streams: a zone sends their insights.
    pub status: Arc<StatusRegistry>,
    /// Zones' dataplane insights, on the global.
    pub remote_insights: Arc<RemoteInsights>,
}

/// The largest sync message either end takes (gRPC's default is 4 MiB; a
/// delta of `MAX_DELTA` large policies can be more).
pub const MAX_MESSAGE: usize = 32 << 20;

/// Kuma's KDS port.
pub const DEFAULT_PORT: u16 = 5685;

#[derive(Debug, thiserror::Error)]
pub enum KdsError {
    #[error("the sync stream broke: {}", .0.message())]
    Stream(tonic::Status),
    #[error("the sync stream closed")]
    Closed,
    #[error("the other side broke the sync protocol: {0}")]
    Protocol(String),
    #[error("the global control plane refused this zone: {0}")]
    Refused(String),
    #[error("{0}")]
    Setup(String),
}
