//! Durable storage of resources. The embedded default is SQLite (a file in
//! the data dir, or in memory for throwaway runs); the schema is plain SQL
//! so that it can move to PostgreSQL unchanged.

mod sqlite;

pub use sqlite::SqliteStore;

use koguma_api::{Resource, ResourceType};

/// Who created a resource: a person through the API, an agent that
/// registered its Dataplane from a template (and whose resource therefore
/// goes away when the agent does), or the multi-zone sync (a copy of a
/// resource that originates on another control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Api,
    Agent,
    Kds,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Agent => "agent",
            Origin::Kds => "kds",
        }
    }

    fn parse(s: &str) -> Origin {
        match s {
            "agent" => Origin::Agent,
            "kds" => Origin::Kds,
            _ => Origin::Api,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    pub resource: Resource,
    pub origin: Origin,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: cannot create {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("store: stored {kind} {mesh}/{name} cannot be read back: {reason}")]
    Corrupt {
        kind: String,
        mesh: String,
        name: String,
        reason: String,
    },
}

pub trait ResourceStore: Send + Sync {
    fn list(&self) -> Result<Vec<StoredResource>, StoreError>;
    /// Creates or replaces; sets the times on `resource.meta` and returns
    /// whether it was created.
    fn upsert(&self, resource: &mut Resource, origin: Origin) -> Result<bool, StoreError>;
    /// Returns whether something was deleted.
    fn delete(&self, rtype: ResourceType, mesh: &str, name: &str) -> Result<bool, StoreError>;
    /// Secrets (CA keys, token signing keys) are never served by the API.
    /// The CP keeps its own per-mesh records there too (the VIP map): they
    /// live and die with the mesh, as secrets do.
    fn secret(&self, mesh: &str, name: &str) -> Result<Option<String>, StoreError>;
    /// Stores `data` unless the secret exists; returns the one stored, so
    /// that two writers racing end up using the same secret.
    fn insert_secret(&self, mesh: &str, name: &str, data: &str) -> Result<String, StoreError>;
    /// Creates or replaces a secret.
    fn put_secret(&self, mesh: &str, name: &str, data: &str) -> Result<(), StoreError>;
    /// Deletes every resource and secret of a mesh (the mesh goes with them).
    fn delete_mesh_contents(&self, mesh: &str) -> Result<(), StoreError>;
}
