//! Every resource type, registered in one place. A type is its spec (a
//! serde struct in a module of its own, with `SpecType` for its
//! validation) and one line below: its REST collection and whether it
//! lives in a mesh. The REST API, the CLI and the store work from this list;
//! none has code of its own per type.

use serde_json::{Map, Value};

use crate::dataplane::DataplaneSpec;
use crate::mesh::MeshSpec;
use crate::traffic_permission::MeshTrafficPermission;
use crate::validation::ValidationError;

/// What each resource spec does for itself.
pub trait SpecType {
    /// Checks beyond shape (which serde checks), naming the field.
    fn validate(&self, errs: &mut ValidationError);
}

/// Where a type's resources live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `/{plural}/{name}`, no `mesh` field.
    Global,
    /// `/meshes/{mesh}/{plural}/{name}`.
    Mesh,
}

macro_rules! resource_types {
    ($($variant:ident($spec:ty): $plural:literal, $scope:ident;)+) => {
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

            pub fn scope(self) -> Scope {
                match self {
                    $(ResourceType::$variant => Scope::$scope),+
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

            pub(crate) fn to_object(&self) -> Map<String, Value> {
                match self {
                    $(Spec::$variant(s) => crate::resource::to_object(s)),+
                }
            }
        }
    };
}

resource_types! {
    Mesh(MeshSpec): "meshes", Global;
    Dataplane(DataplaneSpec): "dataplanes", Mesh;
    MeshTrafficPermission(MeshTrafficPermission): "meshtrafficpermissions", Mesh;
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
    /// `dataplane`, `dataplanes`, `Dataplane`.
    pub fn from_cli_name(name: &str) -> Option<ResourceType> {
        let lower = name.to_ascii_lowercase();
        Self::ALL
            .iter()
            .copied()
            .find(|t| lower == t.plural() || lower == t.kind().to_ascii_lowercase())
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
