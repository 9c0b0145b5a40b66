//! A resource as stored and served: its meta (type, mesh, name, times,
//! labels) and its typed spec, in Kuma's flat Universal JSON form.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::dataplane::DataplaneSpec;
use crate::mesh::MeshSpec;
use crate::registry::{ResourceType, Spec};
use crate::traffic_permission::MeshTrafficPermission;
use crate::validation::{ValidationError, validate_identifier, validate_name};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceMeta {
    /// Empty for resources that are not mesh-scoped.
    pub mesh: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// RFC 3339; set by the store.
    pub creation_time: Option<String>,
    pub modification_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub meta: ResourceMeta,
    pub spec: Spec,
}

const META_KEYS: [&str; 7] = [
    "type",
    "mesh",
    "name",
    "labels",
    "creationTime",
    "modificationTime",
    "kri",
];

/// Kuma's label naming a mesh-scoped resource's mesh.
pub const MESH_LABEL: &str = "kuma.io/mesh";
/// Kuma's label with the name a resource was given where it was made
/// (KDS renames copies).
pub const DISPLAY_NAME_LABEL: &str = "kuma.io/display-name";
const ZONE_LABEL: &str = "kuma.io/zone";
const NAMESPACE_LABEL: &str = "k8s.kuma.io/namespace";

fn take_string(
    obj: &mut Map<String, Value>,
    key: &str,
    errs: &mut ValidationError,
) -> Option<String> {
    match obj.remove(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            errs.add(key, format!("must be a string, got {other}"));
            None
        }
    }
}

pub(crate) fn spec_from<T: DeserializeOwned>(
    obj: Map<String, Value>,
) -> Result<T, ValidationError> {
    serde_path_to_error::deserialize(Value::Object(obj)).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_string()
        } else {
            path
        };
        ValidationError::single(field, e.into_inner().to_string())
    })
}

impl Resource {
    pub fn resource_type(&self) -> ResourceType {
        self.spec.resource_type()
    }

    pub fn as_dataplane(&self) -> Option<&DataplaneSpec> {
        match &self.spec {
            Spec::Dataplane(d) => Some(d),
            _ => None,
        }
    }

    pub fn as_traffic_permission(&self) -> Option<&MeshTrafficPermission> {
        match &self.spec {
            Spec::MeshTrafficPermission(p) => Some(p),
            _ => None,
        }
    }

    pub fn as_zone_ingress(&self) -> Option<&crate::ZoneIngressSpec> {
        match &self.spec {
            Spec::ZoneIngress(z) => Some(z),
            _ => None,
        }
    }

    pub fn as_load_balancing(&self) -> Option<&crate::MeshLoadBalancingStrategy> {
        match &self.spec {
            Spec::MeshLoadBalancingStrategy(p) => Some(p),
            _ => None,
        }
    }

    pub fn as_external_service(&self) -> Option<&crate::ExternalServiceSpec> {
        match &self.spec {
            Spec::ExternalService(e) => Some(e),
            _ => None,
        }
    }

    pub fn as_zone_egress(&self) -> Option<&crate::ZoneEgressSpec> {
        match &self.spec {
            Spec::ZoneEgress(z) => Some(z),
            _ => None,
        }
    }

    pub fn as_zone(&self) -> Option<&crate::ZoneSpec> {
        match &self.spec {
            Spec::Zone(z) => Some(z),
            _ => None,
        }
    }

    pub fn as_secret(&self) -> Option<&crate::SecretSpec> {
        match &self.spec {
            Spec::Secret(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_mesh(&self) -> Option<&MeshSpec> {
        match &self.spec {
            Spec::Mesh(m) => Some(m),
            _ => None,
        }
    }

    /// Parses a flat Universal resource. Shape errors (unknown fields, wrong
    /// types) are reported with their path; semantic checks are `validate`'s.
    pub fn from_value(value: Value) -> Result<Resource, ValidationError> {
        let Value::Object(mut obj) = value else {
            return Err(ValidationError::single(
                "resource",
                "must be a YAML or JSON object",
            ));
        };
        let mut errs = ValidationError::default();
        let kind = take_string(&mut obj, "type", &mut errs);
        let mesh = take_string(&mut obj, "mesh", &mut errs).unwrap_or_default();
        let name = take_string(&mut obj, "name", &mut errs).unwrap_or_default();
        let creation_time = take_string(&mut obj, "creationTime", &mut errs);
        let modification_time = take_string(&mut obj, "modificationTime", &mut errs);
        // Derived from the rest (see `kri`): what a client read back may
        // carry it, and it changes nothing.
        obj.remove("kri");
        let labels = match obj.remove("labels") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => serde_json::from_value(v).unwrap_or_else(|_| {
                errs.add("labels", "must be a map of strings to strings");
                BTreeMap::new()
            }),
        };
        let rtype = match kind.as_deref() {
            None => {
                errs.add("type", "is required");
                None
            }
            Some(k) => ResourceType::from_kind(k).or_else(|| {
                errs.add(
                    "type",
                    format!(
                        "unknown type {k:?}: expected {}",
                        ResourceType::known_kinds()
                    ),
                );
                None
            }),
        };
        errs.clone().into_result()?;
        let rtype = rtype.ok_or(errs)?;
        let spec = Spec::parse(rtype, obj)?;
        Ok(Resource {
            meta: ResourceMeta {
                mesh,
                name,
                labels,
                creation_time,
                modification_time,
            },
            spec,
        })
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errs = ValidationError::default();
        validate_identifier("name", &self.meta.name, &mut errs);
        if self.resource_type().is_mesh_scoped() {
            validate_name("mesh", &self.meta.mesh, &mut errs);
        } else if !self.meta.mesh.is_empty() {
            errs.add(
                "mesh",
                format!(
                    "a {} is not mesh-scoped: remove this field",
                    self.resource_type().kind()
                ),
            );
        }
        crate::validation::validate_labels(&self.meta.labels, &mut errs);
        if let Some(mesh) = self.meta.labels.get(MESH_LABEL)
            && self.resource_type().is_mesh_scoped()
            && *mesh != self.meta.mesh
        {
            errs.add(
                format!("labels[{MESH_LABEL:?}]"),
                "kuma.io/mesh label must not differ from mesh set on resource",
            );
        }
        self.spec.validate(&mut errs);
        errs.into_result()
    }

    /// Kuma's resource identifier,
    /// `kri_<type>_<mesh>_<zone>_<namespace>_<name>_<section>`, for the
    /// types Kuma gives a short name; the name is the display name.
    pub fn kri(&self) -> Option<String> {
        let short = self.resource_type().short_name()?;
        let labels = &self.meta.labels;
        let label = |k: &str| labels.get(k).map_or("", String::as_str);
        let name = labels
            .get(DISPLAY_NAME_LABEL)
            .map_or(self.meta.name.as_str(), String::as_str);
        Some(format!(
            "kri_{short}_{}_{}_{}_{name}_",
            self.meta.mesh,
            label(ZONE_LABEL),
            label(NAMESPACE_LABEL),
        ))
    }

    /// The flat JSON form the REST API serves and the store keeps.
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("type".into(), self.resource_type().kind().into());
        if self.resource_type().is_mesh_scoped() {
            obj.insert("mesh".into(), self.meta.mesh.clone().into());
        }
        obj.insert("name".into(), self.meta.name.clone().into());
        if let Some(t) = &self.meta.creation_time {
            obj.insert("creationTime".into(), t.clone().into());
        }
        if let Some(t) = &self.meta.modification_time {
            obj.insert("modificationTime".into(), t.clone().into());
        }
        if !self.meta.labels.is_empty() {
            obj.insert("labels".into(), serde_json::json!(self.meta.labels));
        }
        for (k, v) in self.spec_object() {
            if !META_KEYS.contains(&k.as_str()) {
                obj.insert(k, v);
            }
        }
        Value::Object(obj)
    }

    /// The spec alone, as the store keeps it beside the meta columns.
    pub fn spec_value(&self) -> Value {
        Value::Object(self.spec_object())
    }

    fn spec_object(&self) -> Map<String, Value> {
        self.spec.to_object()
    }
}

pub(crate) fn to_object<T: Serialize>(spec: &T) -> Map<String, Value> {
    match serde_json::to_value(spec) {
        Ok(Value::Object(m)) => m,
        // Specs are plain structs of strings, numbers and maps: they always
        // serialize to an object.
        _ => Map::new(),
    }
}
