//! The Kuma 2.x resource model as Universal users write it (flat YAML or JSON
//! with `type`, `mesh`, `name` and the spec at top level), with Kuma's
//! validation rules and messages that name the offending field.

mod dataplane;
mod document;
mod mesh;
mod resource;
pub mod tags;
mod validation;

pub use dataplane::{
    Admin, DEFAULT_ADMIN_PORT, DataplaneSpec, Health, Inbound, Networking, Outbound,
};
pub use document::{DocumentError, parse_documents, read_source};
pub use mesh::MeshSpec;
pub use resource::{Resource, ResourceMeta, ResourceType, Spec};
pub use tags::Protocol;
pub use validation::{ValidationError, Violation, validate_name};
