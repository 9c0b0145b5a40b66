//! The Kuma 2.x resource model as Universal users write it (flat YAML or JSON
//! with `type`, `mesh`, `name` and the spec at top level), with Kuma's
//! validation rules and messages that name the offending field.

mod dataplane;
mod document;
mod duration;
mod external_service;
pub mod headers;
mod load_balancing;
mod mesh;
mod mesh_backends;
pub mod policy;
mod registry;
mod resource;
pub mod route;
mod secret;
pub mod tags;
mod target_ref;
mod traffic_permission;
mod validation;
mod zone;

pub use dataplane::{
    Admin, DEFAULT_ADMIN_PORT, DataplaneSpec, Health, Inbound, Networking, Outbound,
    TransparentProxying,
};
pub use document::{DocumentError, parse_documents, read_source};
pub use duration::parse_duration;
pub use external_service::{DataSource, ExternalNetworking, ExternalServiceSpec, ExternalTls};
pub use load_balancing::{
    CrossZone, Failover, FromZones, HashPolicyConf, LoadBalancerConf, LoadBalancingConf,
    LoadBalancingSpec, LoadBalancingTo, LocalityAwareness, MeshLoadBalancingStrategy, ToZoneType,
    ToZones,
};
pub use mesh::{
    BackendConf, CaCert, DEFAULT_CA_LIFETIME, DEFAULT_DP_CERT_LIFETIME, DpCert, MeshRouting,
    MeshSpec, Mtls, MtlsBackend, MtlsMode, Rotation,
};
pub use mesh_backends::{Backend, Backends, Constraints, Metrics};
pub use policy::{AnyPolicy, Policy, PolicyConf};
pub use registry::{KdsSync, ResourceType, Scope, Spec, SpecType};
pub use resource::{DISPLAY_NAME_LABEL, MESH_LABEL, Resource, ResourceMeta};
pub use secret::SecretSpec;
pub use tags::Protocol;
pub use target_ref::{InboundSubject, Selector, TargetRef};
pub use traffic_permission::{
    From, Match, MeshTrafficPermission, MeshTrafficPermissionSpec, PermissionAction,
    PermissionConf, Rule, RuleConf, SniMatch, SpiffeIdMatch,
};
pub use validation::{
    ValidationError, Violation, validate_identifier, validate_labels, validate_name,
};
pub use zone::{
    AvailableService, ZoneEgressNetworking, ZoneEgressSpec, ZoneIngressNetworking, ZoneIngressSpec,
    ZoneSpec,
};
