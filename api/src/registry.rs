//! Every resource type, registered in one place. A type is its spec (a
//! serde struct in a module of its own, with `SpecType` for its
//! validation) and one line below: its REST collection and whether it
//! lives in a mesh, and which way it travels between a global and its zones.
//! The REST API, the CLI, the store and the multi-zone sync work from this
//! list; none has code of its own per type.

use serde_json::{Map, Value};

use crate::dataplane::DataplaneSpec;
use crate::external_service::ExternalServiceSpec;
use crate::load_balancing::MeshLoadBalancingStrategy;
use crate::mesh::MeshSpec;
use crate::policy::{
    AccessLogConf, AnyPolicy, CircuitBreakerConf, FaultInjectionConf, HealthCheckConf, Policy,
    RateLimitConf, RetryConf, TimeoutConf,
};
use crate::route::{MeshHttpRoute, MeshTcpRoute};
use crate::secret::SecretSpec;
use crate::traffic_permission::MeshTrafficPermission;
use crate::validation::ValidationError;
use crate::zone::{ZoneEgressSpec, ZoneIngressSpec, ZoneSpec};

/// What each resource spec does for itself.
pub trait SpecType {
    /// Checks beyond shape (which serde checks), naming the field.
    fn validate(&self, errs: &mut ValidationError);

    /// A `to` policy, for the engine that selects and merges them.
    fn as_policy(&self) -> Option<&dyn AnyPolicy> {
        None
    }
}

/// Where a type's resources live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `/{plural}/{name}`, no `mesh` field.
    Global,
    /// `/meshes/{mesh}/{plural}/{name}`.
    Mesh,
}

/// Which way a type's resources travel in multi-zone (Kuma's KDS flags).
/// A resource is changed only on the control plane it originates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdsSync {
    /// Made on the global, copied to every zone (Mesh and policies).
    GlobalToZones,
    /// Made on a zone, copied to the global (Dataplane, ZoneEgress).
    ZoneToGlobal,
    /// Made on a zone, copied to the global and from there to every other
    /// zone (ZoneIngress: what other zones route through).
    ZoneToGlobalToZones,
    /// Each control plane's own, never copied (Zone).
    Local,
}

impl KdsSync {
    /// Whether a zone CP sends its own resources of this type to the global.
    pub fn zone_sends(self) -> bool {
        matches!(self, KdsSync::ZoneToGlobal | KdsSync::ZoneToGlobalToZones)
    }

    /// Whether the global sends resources of this type to zones (its own,
    /// or other zones' copies).
    pub fn global_sends(self) -> bool {
        matches!(self, KdsSync::GlobalToZones | KdsSync::ZoneToGlobalToZones)
    }
}

macro_rules! resource_types {
    ($($variant:ident($spec:ty): $plural:literal, $short:expr, $scope:ident, $sync:ident;)+) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ResourceType {
            $($variant),+
        }

        /// A resource's typed spec.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Spec {
            $($variant($spec)),+
        }

        impl ResourceType {
            pub const ALL: &'static [ResourceType] = &[$(ResourceType::$variant),+];

            /// The `type` field's value.
            pub fn kind(self) -> &'static str {
                match self {
                    $(ResourceType::$variant => stringify!($variant)),+
                }
            }

            /// The REST collection name.
            pub fn plural(self) -> &'static str {
                match self {
                    $(ResourceType::$variant => $plural),+
                }
            }

            /// Kuma's short name, the type part of a KRI; `None` for the
            /// types Kuma gives none.
            pub fn short_name(self) -> Option<&'static str> {
                match self {
                    $(ResourceType::$variant => $short),+
                }
            }

            pub fn scope(self) -> Scope {
                match self {
                    $(ResourceType::$variant => Scope::$scope),+
                }
            }

            pub fn kds_sync(self) -> KdsSync {
                match self {
                    $(ResourceType::$variant => KdsSync::$sync),+
                }
            }
        }

        impl Spec {
            pub fn resource_type(&self) -> ResourceType {
                match self {
                    $(Spec::$variant(_) => ResourceType::$variant),+
                }
            }

            pub(crate) fn parse(rtype: ResourceType, obj: Map<String, Value>) -> Result<Spec, ValidationError> {
                Ok(match rtype {
                    $(ResourceType::$variant => Spec::$variant(crate::resource::spec_from(obj)?)),+
                })
            }

            pub(crate) fn validate(&self, errs: &mut ValidationError) {
                match self {
                    $(Spec::$variant(s) => SpecType::validate(s, errs)),+
                }
            }

            /// The policy this spec is, when it is a `to` policy.
            pub fn as_policy(&self) -> Option<&dyn AnyPolicy> {
                match self {
                    $(Spec::$variant(s) => SpecType::as_policy(s)),+
                }
            }

            pub(crate) fn to_object(&self) -> Map<String, Value> {
                match self {
                    $(Spec::$variant(s) => crate::resource::to_object(s)),+
                }
            }
        }
    };
}

// Order matters to the multi-zone sync: a type is sent after the types
// listed above it (a Mesh before what lives in it) and removed before them.
resource_types! {
    Mesh(MeshSpec): "meshes", Some("m"), Global, GlobalToZones;
    Secret(SecretSpec): "secrets", None, Mesh, GlobalToZones;
    Zone(ZoneSpec): "zones", Some("z"), Global, Local;
    ZoneIngress(ZoneIngressSpec): "zoneingresses", Some("zi"), Global, ZoneToGlobalToZones;
    ZoneEgress(ZoneEgressSpec): "zoneegresses", Some("ze"), Global, ZoneToGlobal;
    Dataplane(DataplaneSpec): "dataplanes", Some("dp"), Mesh, ZoneToGlobal;
    MeshTrafficPermission(MeshTrafficPermission): "meshtrafficpermissions", Some("mtp"), Mesh, GlobalToZones;
    ExternalService(ExternalServiceSpec): "external-services", None, Mesh, GlobalToZones;
    MeshLoadBalancingStrategy(MeshLoadBalancingStrategy): "meshloadbalancingstrategies", Some("mlbs"), Mesh, GlobalToZones;
    MeshTimeout(Policy<TimeoutConf>): "meshtimeouts", Some("mt"), Mesh, GlobalToZones;
    MeshRetry(Policy<RetryConf>): "meshretries", Some("mr"), Mesh, GlobalToZones;
    MeshCircuitBreaker(Policy<CircuitBreakerConf>): "meshcircuitbreakers", Some("mcb"), Mesh, GlobalToZones;
    MeshHealthCheck(Policy<HealthCheckConf>): "meshhealthchecks", Some("mhc"), Mesh, GlobalToZones;
    MeshHTTPRoute(MeshHttpRoute): "meshhttproutes", Some("mhttpr"), Mesh, GlobalToZones;
    MeshTCPRoute(MeshTcpRoute): "meshtcproutes", Some("mtcpr"), Mesh, GlobalToZones;
    MeshFaultInjection(Policy<FaultInjectionConf>): "meshfaultinjections", Some("mfi"), Mesh, GlobalToZones;
    MeshRateLimit(Policy<RateLimitConf>): "meshratelimits", Some("mrl"), Mesh, GlobalToZones;
    MeshAccessLog(Policy<AccessLogConf>): "meshaccesslogs", Some("mal"), Mesh, GlobalToZones;
}

impl ResourceType {
    pub fn from_kind(kind: &str) -> Option<ResourceType> {
        Self::ALL.iter().copied().find(|t| t.kind() == kind)
    }

    /// The type a REST collection holds.
    pub fn from_plural(plural: &str) -> Option<ResourceType> {
        Self::ALL.iter().copied().find(|t| t.plural() == plural)
    }

    /// Accepts what a person types on the command line: `mesh`, `meshes`,
    /// `dataplane`, `dataplanes`, `Dataplane`, `zone-ingresses`.
    pub fn from_cli_name(name: &str) -> Option<ResourceType> {
        let lower = name.to_ascii_lowercase().replace('-', "");
        Self::ALL.iter().copied().find(|t| {
            lower == t.plural().replace('-', "") || lower == t.kind().to_ascii_lowercase()
        })
    }

    pub fn is_mesh_scoped(self) -> bool {
        self.scope() == Scope::Mesh
    }

    /// "Mesh, Dataplane or MeshTrafficPermission", for error messages.
    pub fn known_kinds() -> String {
        list(Self::ALL.iter().map(|t| t.kind()))
    }

    /// "meshes, dataplanes or meshtrafficpermissions".
    pub fn known_plurals() -> String {
        list(Self::ALL.iter().map(|t| t.plural()))
    }
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.to_string(),
        None => String::new(),
    }
}
