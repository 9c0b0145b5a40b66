//! The two ends of a sync stream and what each owns: which resources it
//! sends (and under which key) and what it already holds of the other's;
//! `receive` is how it stores what arrives. Everything that differs between
//! the global and a zone is there; the stream loop (`session`) is the same
//! for both.

use std::collections::BTreeMap;
use std::sync::Arc;

use koguma_api::{Resource, ResourceType};
use koguma_proto::v1::{KdsKey, KdsResource, KdsVersion};

use super::LocalState;
use super::hash::fnv1a64;
use crate::catalog::Catalog;
use crate::mesh_ca::MeshCas;
use crate::role::{DISPLAY_NAME_LABEL, ORIGIN_LABEL, ZONE_LABEL};
use crate::store::{Origin, StoredResource};
use crate::tokens;

/// A resource as its sender names it: (type kind or "Secret", mesh, name).
pub type Key = (String, String, String);

pub const SECRET: &str = "Secret";
/// A zone's dataplane's insight (its stream to the zone CP), for the global.
pub const INSIGHT: &str = "DataplaneInsight";

pub fn key_of(k: &KdsKey) -> Key {
    (k.r#type.clone(), k.mesh.clone(), k.name.clone())
}

pub fn wire_key(k: &Key) -> KdsKey {
    KdsKey {
        r#type: k.0.clone(),
        mesh: k.1.clone(),
        name: k.2.clone(),
    }
}

/// What a side holds, as a hello or welcome carries it.
pub fn to_versions(held: BTreeMap<Key, String>) -> Vec<KdsVersion> {
    held.into_iter()
        .map(|(k, version)| KdsVersion {
            key: Some(wire_key(&k)),
            version,
        })
        .collect()
}

/// What the other side holds, from its hello or welcome.
pub fn from_versions(held: &[KdsVersion]) -> BTreeMap<Key, String> {
    held.iter()
        .filter_map(|v| Some((key_of(v.key.as_ref()?), v.version.clone())))
        .collect()
}

/// Meshes first (what lives in a mesh needs it), then their secrets, then
/// the other types in registry order; removals go the other way.
pub fn rank(kind: &str) -> usize {
    if kind == SECRET {
        return 1;
    }
    if kind == INSIGHT {
        return usize::MAX - 1;
    }
    match ResourceType::from_kind(kind) {
        Some(ResourceType::Mesh) => 0,
        Some(t) => 2 + ResourceType::ALL.iter().position(|x| *x == t).unwrap_or(0),
        None => usize::MAX,
    }
}

/// Labels the sync itself sets; they are not part of what is compared.
const SYNC_LABELS: [&str; 3] = [ORIGIN_LABEL, ZONE_LABEL, DISPLAY_NAME_LABEL];

/// Versions are computed the same way on both ends from what each stores,
/// so that after a reconnect equal versions mean "nothing to send".
pub fn version(r: &Resource) -> String {
    let spec = r.spec_value().to_string();
    let labels: Vec<String> = r
        .meta
        .labels
        .iter()
        .filter(|(k, _)| !SYNC_LABELS.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{:016x}",
        fnv1a64(&[
            r.resource_type().kind(),
            "\0",
            &spec,
            "\0",
            &labels.join(",")
        ])
    )
}

fn secret_version(data: &str) -> String {
    format!("{:016x}", fnv1a64(&[data]))
}

/// One thing a side sends: its version, and the payload when asked.
#[derive(Clone)]
pub struct Item {
    pub version: String,
    pub payload: Payload,
}

#[derive(Clone)]
pub enum Payload {
    Resource(Arc<StoredResource>),
    /// A secret's data.
    Secret(Arc<str>),
    /// An insight's JSON.
    Insight(Arc<str>),
}

#[derive(Clone, PartialEq, Eq)]
pub enum Side {
    /// The global, talking to zone `.0`.
    Global(String),
    /// A zone, talking to its global.
    Zone,
}

impl Side {
    /// Whether this side sends `r` to the other, as of `catalog`.
    pub fn sends(&self, catalog: &Catalog, r: &StoredResource) -> bool {
        let sync = r.resource.resource_type().kds_sync();
        match self {
            Side::Zone => sync.zone_sends() && r.origin != Origin::Kds,
            Side::Global(zone) => {
                let own = r.origin != Origin::Kds && sync.global_sends();
                // Other zones' ingresses, never the zone's own back, and
                // none of a zone disabled on the global (Kuma's rule: other
                // zones stop routing to it).
                let from = r.resource.meta.labels.get(ZONE_LABEL);
                let other_zone = r.origin == Origin::Kds
                    && sync.global_sends()
                    && from != Some(zone)
                    && from.is_none_or(|z| zone_enabled(catalog, z));
                own || other_zone
            }
        }
    }

    /// The keys and items of what `zone` made that this side may send, as
    /// of `catalog`, and of those it may not: for when that zone is enabled
    /// or disabled.
    pub fn made_in_zone(&self, catalog: &Catalog, zone: &str) -> (Vec<(Key, Item)>, Vec<Key>) {
        let (mut send, mut hold) = (Vec::new(), Vec::new());
        for r in catalog.resources.values() {
            let made_there = r.origin == Origin::Kds
                && r.resource.resource_type().kds_sync().global_sends()
                && r.resource.meta.labels.get(ZONE_LABEL).map(String::as_str) == Some(zone);
            if !made_there {
                continue;
            }
            if self.sends(catalog, r) {
                send.push((resource_key(r), resource_item(r)));
            } else {
                hold.push(resource_key(r));
            }
        }
        (send, hold)
    }

    /// Everything this side sends, as of `catalog`.
    pub async fn items(&self, catalog: &Catalog, local: &LocalState) -> BTreeMap<Key, Item> {
        let mut out = BTreeMap::new();
        for r in catalog.resources.values() {
            if self.sends(catalog, r) {
                out.insert(resource_key(r), resource_item(r));
            }
        }
        for mesh in catalog.list(ResourceType::Mesh, None) {
            out.extend(self.secrets(catalog, local, &mesh.resource.meta.name).await);
        }
        match self {
            Side::Zone => out.extend(insight_items(catalog, local)),
            Side::Global(_) => {
                for key in tokens::synced_public_keys(&local.resources).await {
                    match key {
                        Ok((name, data)) => {
                            let item = Item {
                                version: secret_version(&data),
                                payload: Payload::Secret(data.into()),
                            };
                            out.insert((SECRET.into(), String::new(), name), item);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "a token public key cannot be sent to zones")
                        }
                    }
                }
            }
        }
        out
    }

    /// The items of one stored resource key, as of `catalog` (none when it
    /// is gone or not this side's to send).
    pub fn items_of(
        &self,
        catalog: &Catalog,
        rkey: &crate::catalog::ResourceKey,
    ) -> Option<(Key, Item)> {
        let r = catalog.resources.get(rkey)?;
        self.sends(catalog, r)
            .then(|| (resource_key(r), resource_item(r)))
    }

    /// The global sends each mesh's secrets a zone needs to act for it:
    /// its builtin CA (so that every zone signs workload certificates under
    /// one root) and its dataplane-token signing key (so that a token works
    /// in every zone). Both are made here first if need be.
    pub async fn secrets(
        &self,
        catalog: &Catalog,
        local: &LocalState,
        mesh: &str,
    ) -> BTreeMap<Key, Item> {
        let mut out = BTreeMap::new();
        let (Side::Global(_), Some(spec)) = (self, catalog.mesh(mesh)) else {
            return out;
        };
        let mut secrets = Vec::new();
        match tokens::dataplane::signing_key(&local.resources, mesh).await {
            Ok(data) => secrets.push((tokens::dataplane::signing_key_name(mesh), data)),
            Err(e) => {
                tracing::warn!(mesh, error = %e, "the dataplane-token signing key cannot be sent to zones")
            }
        }
        if let Some(backend) = spec.mtls_backend() {
            match local.cas.secrets(mesh, backend).await {
                Ok(ca) => secrets.extend(ca),
                Err(e) => tracing::warn!(mesh, error = %e, "the mesh CA cannot be sent to zones"),
            }
        }
        for (name, data) in secrets {
            let item = Item {
                version: secret_version(&data),
                payload: Payload::Secret(data.into()),
            };
            out.insert((SECRET.into(), mesh.into(), name), item);
        }
        out
    }

    /// The secrets of `mesh` a zone takes from the global.
    pub(super) fn synced_secret_names(
        cas: &MeshCas,
        mesh: &str,
        spec: Option<&koguma_api::MeshSpec>,
    ) -> Vec<String> {
        let mut names = vec![tokens::dataplane::signing_key_name(mesh)];
        if let Some(backend) = spec.and_then(|m| m.mtls_backend()) {
            names.extend(cas.secret_names(mesh, backend));
        }
        names
    }

    /// What this side holds of what the other sends, keyed as the other
    /// names it: sent at the start of each stream so that only what
    /// differs travels.
    pub async fn holds(&self, catalog: &Catalog, local: &LocalState) -> BTreeMap<Key, String> {
        let mut out = BTreeMap::new();
        for r in catalog.resources.values() {
            if r.origin != Origin::Kds {
                continue;
            }
            let res = &r.resource;
            let key = match self {
                Side::Zone => resource_key(r),
                Side::Global(zone) => {
                    if res.meta.labels.get(ZONE_LABEL) != Some(zone) {
                        continue;
                    }
                    let display = res
                        .meta
                        .labels
                        .get(DISPLAY_NAME_LABEL)
                        .cloned()
                        .unwrap_or_default();
                    (
                        res.resource_type().kind().to_string(),
                        res.meta.mesh.clone(),
                        display,
                    )
                }
            };
            out.insert(key, version(res));
        }
        if let Side::Global(zone) = self {
            for (mesh, display, version) in local.remote_insights.of_zone(zone) {
                out.insert((INSIGHT.into(), mesh, display), version);
            }
        }
        if let Side::Zone = self {
            for name in tokens::synced_public_key_names() {
                if let Ok(Some(data)) = local.resources.secret("", &name).await {
                    out.insert((SECRET.into(), String::new(), name), secret_version(&data));
                }
            }
            for mesh in catalog.list(ResourceType::Mesh, None) {
                let name = &mesh.resource.meta.name;
                for secret in Self::synced_secret_names(&local.cas, name, mesh.resource.as_mesh()) {
                    if let Ok(Some(data)) = local.resources.secret(name, &secret).await {
                        out.insert((SECRET.into(), name.clone(), secret), secret_version(&data));
                    }
                }
            }
        }
        out
    }

    pub fn describe_peer(&self) -> String {
        match self {
            Side::Global(z) => format!("zone {z:?}"),
            Side::Zone => "the global".to_string(),
        }
    }
}

/// A zone is enabled unless its Zone on the global says otherwise.
fn zone_enabled(catalog: &Catalog, zone: &str) -> bool {
    catalog
        .get(ResourceType::Zone, "", zone)
        .and_then(|z| z.resource.as_zone())
        .is_none_or(|z| z.is_enabled())
}

pub fn resource_key(r: &StoredResource) -> Key {
    let res = &r.resource;
    (
        res.resource_type().kind().to_string(),
        res.meta.mesh.clone(),
        res.meta.name.clone(),
    )
}

fn resource_item(r: &Arc<StoredResource>) -> Item {
    Item {
        version: version(&r.resource),
        payload: Payload::Resource(r.clone()),
    }
}

/// The wire form of an item.
pub fn to_wire(key: &Key, item: &Item) -> KdsResource {
    let (labels, spec) = match &item.payload {
        Payload::Resource(r) => (
            r.resource.meta.labels.clone(),
            r.resource.spec_value().to_string(),
        ),
        Payload::Secret(data) | Payload::Insight(data) => (BTreeMap::new(), data.to_string()),
    };
    KdsResource {
        key: Some(wire_key(key)),
        labels,
        spec,
        version: item.version.clone(),
    }
}

/// A zone's insights of its own dataplanes, as of now: they change with
/// streams, not with the catalog, so the session samples them.
pub fn insight_items(catalog: &Catalog, local: &LocalState) -> BTreeMap<Key, Item> {
    let mut out = BTreeMap::new();
    for ((mesh, name), insight) in local.status.snapshot(local.resources.instance()) {
        let own = catalog
            .get(ResourceType::Dataplane, &mesh, &name)
            .is_some_and(|r| r.origin != Origin::Kds);
        if !own {
            continue;
        }
        let json = insight.to_string();
        let item = Item {
            version: format!("{:016x}", fnv1a64(&[&json])),
            payload: Payload::Insight(json.into()),
        };
        out.insert((INSIGHT.into(), mesh, name), item);
    }
    out
}
