//! Durable storage of resources, secrets and dataplane sessions. The
//! embedded default is SQLite (a file in the data dir, or in memory for
//! throwaway runs) for one control plane; PostgreSQL is the shared store of
//! several instances, with a change feed so that each keeps its catalog
//! current. Every call is async: SQLite's run on the blocking pool.

mod args;
mod postgres;
mod row;
mod sqlite;

pub use args::{StoreArgs, StoreKind};
pub use postgres::{PgStore, PostgresArgs};
pub use sqlite::SqliteStore;

use std::time::Duration;

use koguma_api::{Resource, ResourceType};
use tokio::sync::mpsc;

use crate::catalog::{DataplaneKey, ResourceKey};

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
    /// Kuma's resource version: changes with every write. Across instances
    /// it only grows (one sequence for the whole store), so a newer copy is
    /// never replaced by an older one.
    pub version: i64,
}

/// What a write expects to find, for optimistic concurrency: a write whose
/// expectation does not hold changes nothing and fails with `Conflict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Whatever is stored (a copy from the multi-zone sync, whose source
    /// of truth is elsewhere).
    Any,
    /// Nothing stored under the key.
    Absent,
    /// The stored resource is at this version.
    Version(i64),
}

impl Expect {
    /// What to expect to replace what a reader saw: its version, or nothing.
    pub fn seen(version: Option<i64>) -> Expect {
        version.map_or(Expect::Absent, Expect::Version)
    }
}

/// A write that happened: the new version, and whether it created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub version: i64,
    pub created: bool,
}

/// Which control-plane instance serves a dataplane's stream, and whether
/// its peers should send it traffic: what every instance needs to know of
/// a stream served by another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub rtype: ResourceType,
    pub key: DataplaneKey,
    pub instance: String,
    pub draining: bool,
    pub connect_time: String,
}

/// What changed in the store, as another instance's change feed reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    Resource(ResourceKey),
    Secret {
        mesh: String,
        name: String,
    },
    Session(DataplaneKey),
    /// Changes may have been missed (the feed reconnected): read it all.
    Everything,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: PostgreSQL: {0}")]
    Postgres(String),
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
    /// Kuma's wording (`store.ErrorResourceConflict`).
    #[error(
        "resource conflict: type={kind:?} name={name:?} mesh={mesh:?}: it changed since it was read; read it again and retry"
    )]
    Conflict {
        kind: &'static str,
        mesh: String,
        name: String,
    },
    #[error("{0}")]
    Schema(String),
    #[error("store: a blocking store call did not finish: {0}")]
    Join(String),
}

impl StoreError {
    fn conflict(rtype: ResourceType, mesh: &str, name: &str) -> StoreError {
        StoreError::Conflict {
            kind: rtype.kind(),
            mesh: mesh.into(),
            name: name.into(),
        }
    }
}

#[async_trait::async_trait]
pub trait ResourceStore: Send + Sync {
    async fn list(&self) -> Result<Vec<StoredResource>, StoreError>;
    async fn get(
        &self,
        rtype: ResourceType,
        mesh: &str,
        name: &str,
    ) -> Result<Option<StoredResource>, StoreError>;
    /// Creates or replaces `resource` if the stored one is as `expect`
    /// says; sets the times on `resource.meta`.
    async fn upsert(
        &self,
        resource: &mut Resource,
        origin: Origin,
        expect: Expect,
    ) -> Result<Written, StoreError>;
    /// Returns whether something was deleted.
    async fn delete(&self, rtype: ResourceType, mesh: &str, name: &str)
    -> Result<bool, StoreError>;

    /// Secrets (CA keys, token signing keys) are never served by the API.
    /// The CP keeps its own per-mesh records there too (the VIP map): they
    /// live and die with the mesh, as secrets do.
    async fn secret(&self, mesh: &str, name: &str) -> Result<Option<String>, StoreError>;
    /// Stores the secrets that do not exist yet, all in one transaction,
    /// and returns what is stored under each name afterwards: two writers
    /// racing end up using the same secrets.
    async fn insert_secrets(
        &self,
        mesh: &str,
        secrets: &[(String, String)],
    ) -> Result<Vec<String>, StoreError>;
    /// Creates or replaces a secret.
    async fn put_secret(&self, mesh: &str, name: &str, data: &str) -> Result<(), StoreError>;
    /// Deletes every resource, secret and session of a mesh (the mesh goes
    /// with them).
    async fn delete_mesh_contents(&self, mesh: &str) -> Result<(), StoreError>;

    async fn sessions(&self) -> Result<Vec<Session>, StoreError>;
    async fn session(&self, key: &DataplaneKey) -> Result<Option<Session>, StoreError>;
    async fn put_session(&self, session: &Session) -> Result<(), StoreError>;
    async fn delete_session(&self, key: &DataplaneKey) -> Result<(), StoreError>;

    /// Records that `instance` is alive now.
    async fn heartbeat(&self, instance: &str) -> Result<(), StoreError>;
    /// The instances that were alive within `within`.
    async fn live_instances(&self, within: Duration) -> Result<Vec<String>, StoreError>;
    /// Forgets the instances silent for longer than `silent_for` (the
    /// leader's housekeeping; readers only ask who is alive).
    async fn forget_instances(&self, silent_for: Duration) -> Result<(), StoreError>;

    /// Other writers' changes, when other writers can exist.
    fn changes(&self) -> Option<mpsc::Receiver<Change>> {
        None
    }
    /// Campaigns for leadership; `None` when this store has one writer,
    /// which therefore always leads.
    fn leadership(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
