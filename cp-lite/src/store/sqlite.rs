//! The embedded store: one SQLite file for one control plane. Its calls
//! run on tokio's blocking pool, one at a time (a SQLite connection is not
//! shared between threads).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use koguma_api::{Resource, ResourceType};
use rusqlite::{Connection, OptionalExtension, params};

use super::row::{self, COLUMNS, Row, SESSION_COLUMNS};
use super::{
    Expect, Origin, ResourceStore, Session, StoreError, StoredResource, Written, now_rfc3339,
};
use crate::catalog::DataplaneKey;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (
    type              TEXT NOT NULL,
    mesh              TEXT NOT NULL,
    name              TEXT NOT NULL,
    spec              TEXT NOT NULL,
    labels            TEXT NOT NULL,
    origin            TEXT NOT NULL,
    version           BIGINT NOT NULL,
    creation_time     TEXT NOT NULL,
    modification_time TEXT NOT NULL,
    PRIMARY KEY (type, mesh, name)
);
CREATE TABLE IF NOT EXISTS secrets (
    mesh          TEXT NOT NULL,
    name          TEXT NOT NULL,
    data          TEXT NOT NULL,
    creation_time TEXT NOT NULL,
    PRIMARY KEY (mesh, name)
);
CREATE TABLE IF NOT EXISTS sessions (
    mesh         TEXT NOT NULL,
    name         TEXT NOT NULL,
    type         TEXT NOT NULL,
    instance     TEXT NOT NULL,
    draining     BOOLEAN NOT NULL,
    connect_time TEXT NOT NULL,
    PRIMARY KEY (mesh, name)
);
-- The next version is MAX(version) + 1: an index makes that a lookup.
CREATE INDEX IF NOT EXISTS resources_by_version ON resources (version);
CREATE TABLE IF NOT EXISTS instances (
    id        TEXT PRIMARY KEY,
    heartbeat BIGINT NOT NULL
);
";

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens `dir`/koguma.db, creating the directory 0700 and the file
    /// 0600: it holds mesh CA keys and token signing keys.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        let db = dir.join("koguma.db");
        crate::private_files::create_dir(dir).map_err(|source| StoreError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        crate::private_files::create_file(&db).map_err(|source| StoreError::DataDir {
            path: db.display().to_string(),
            source,
        })?;
        crate::private_files::warn_if_open(dir);
        crate::private_files::warn_if_open(&db);
        let conn = Connection::open(&db)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn)
    }

    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, off the runtime's threads.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A statement that panicked leaves SQLite consistent (it rolls back).
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        kind: r.get(0)?,
        mesh: r.get(1)?,
        name: r.get(2)?,
        spec: r.get(3)?,
        labels: r.get(4)?,
        origin: r.get(5)?,
        version: r.get(6)?,
        created: r.get(7)?,
        modified: r.get(8)?,
    })
}

fn read_session(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Session>> {
    let kind: String = r.get(2)?;
    let Some(rtype) = ResourceType::from_kind(&kind) else {
        return Ok(None);
    };
    Ok(Some(Session {
        rtype,
        key: (r.get(0)?, r.get(1)?),
        instance: r.get(3)?,
        draining: r.get(4)?,
        connect_time: r.get(5)?,
    }))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[async_trait::async_trait]
impl ResourceStore for SqliteStore {
    async fn list(&self) -> Result<Vec<StoredResource>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM resources ORDER BY type, mesh, name"
            ))?;
            let rows = stmt.query_map([], read_row)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row?.decode()?);
            }
            Ok(out)
        })
        .await
    }

    async fn get(
        &self,
        rtype: ResourceType,
        mesh: &str,
        name: &str,
    ) -> Result<Option<StoredResource>, StoreError> {
        let (mesh, name) = (mesh.to_string(), name.to_string());
        self.call(move |conn| {
            conn.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM resources WHERE type = ?1 AND mesh = ?2 AND name = ?3"
                ),
                params![rtype.kind(), mesh, name],
                read_row,
            )
            .optional()?
            .map(Row::decode)
            .transpose()
        })
        .await
    }

    async fn upsert(
        &self,
        resource: &mut Resource,
        origin: Origin,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        let rtype = resource.resource_type();
        let (mesh, name) = (resource.meta.mesh.clone(), resource.meta.name.clone());
        let (spec, labels) = row::encode(resource);
        let now = now_rfc3339();
        let modified = now.clone();
        let (created, written) = self
            .call(move |conn| {
                let tx = conn.transaction()?;
                let existing: Option<(String, i64)> = tx
                    .query_row(
                        "SELECT creation_time, version FROM resources WHERE type = ?1 AND mesh = ?2 AND name = ?3",
                        params![rtype.kind(), mesh, name],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let holds = match (expect, &existing) {
                    (Expect::Any, _) | (Expect::Absent, None) => true,
                    (Expect::Version(want), Some((_, have))) => want == *have,
                    _ => false,
                };
                if !holds {
                    return Err(StoreError::conflict(rtype, &mesh, &name));
                }
                let version: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM resources",
                    [],
                    |r| r.get(0),
                )?;
                let created = existing.as_ref().map_or(now.clone(), |(c, _)| c.clone());
                tx.execute(
                    "INSERT INTO resources (type, mesh, name, spec, labels, origin, version, creation_time, modification_time)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (type, mesh, name) DO UPDATE SET
                       spec = excluded.spec, labels = excluded.labels, origin = excluded.origin,
                       version = excluded.version, modification_time = excluded.modification_time",
                    params![rtype.kind(), mesh, name, spec, labels, origin.as_str(), version, created, now],
                )?;
                tx.commit()?;
                Ok((created, Written { version, created: existing.is_none() }))
            })
            .await?;
        resource.meta.creation_time = Some(created);
        resource.meta.modification_time = Some(modified);
        Ok(written)
    }

    async fn delete(
        &self,
        rtype: ResourceType,
        mesh: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let (mesh, name) = (mesh.to_string(), name.to_string());
        self.call(move |conn| {
            let n = conn.execute(
                "DELETE FROM resources WHERE type = ?1 AND mesh = ?2 AND name = ?3",
                params![rtype.kind(), mesh, name],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn secret(&self, mesh: &str, name: &str) -> Result<Option<String>, StoreError> {
        let (mesh, name) = (mesh.to_string(), name.to_string());
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT data FROM secrets WHERE mesh = ?1 AND name = ?2",
                    params![mesh, name],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    async fn insert_secrets(
        &self,
        mesh: &str,
        secrets: &[(String, String)],
    ) -> Result<Vec<String>, StoreError> {
        let mesh = mesh.to_string();
        let secrets = secrets.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let now = now_rfc3339();
            let mut stored = Vec::new();
            for (name, data) in &secrets {
                tx.execute(
                    "INSERT INTO secrets (mesh, name, data, creation_time) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (mesh, name) DO NOTHING",
                    params![mesh, name, data, now],
                )?;
                stored.push(tx.query_row(
                    "SELECT data FROM secrets WHERE mesh = ?1 AND name = ?2",
                    params![mesh, name],
                    |r| r.get(0),
                )?);
            }
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    async fn put_secret(&self, mesh: &str, name: &str, data: &str) -> Result<(), StoreError> {
        let (mesh, name, data) = (mesh.to_string(), name.to_string(), data.to_string());
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO secrets (mesh, name, data, creation_time) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (mesh, name) DO UPDATE SET data = excluded.data",
                params![mesh, name, data, now_rfc3339()],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_mesh_contents(&self, mesh: &str) -> Result<(), StoreError> {
        let mesh = mesh.to_string();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM secrets WHERE mesh = ?1", params![mesh])?;
            tx.execute("DELETE FROM resources WHERE mesh = ?1", params![mesh])?;
            tx.execute("DELETE FROM sessions WHERE mesh = ?1", params![mesh])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn sessions(&self) -> Result<Vec<Session>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare(&format!("SELECT {SESSION_COLUMNS} FROM sessions"))?;
            let rows = stmt.query_map([], read_session)?;
            let mut out = Vec::new();
            for row in rows {
                out.extend(row?);
            }
            Ok(out)
        })
        .await
    }

    async fn session(&self, key: &DataplaneKey) -> Result<Option<Session>, StoreError> {
        let key = key.clone();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions WHERE mesh = ?1 AND name = ?2"
                    ),
                    params![key.0, key.1],
                    read_session,
                )
                .optional()?
                .flatten())
        })
        .await
    }

    async fn put_session(&self, s: &Session) -> Result<(), StoreError> {
        let s = s.clone();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO sessions (mesh, name, type, instance, draining, connect_time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (mesh, name) DO UPDATE SET type = excluded.type,
                   instance = excluded.instance, draining = excluded.draining,
                   connect_time = excluded.connect_time",
                params![
                    s.key.0,
                    s.key.1,
                    s.rtype.kind(),
                    s.instance,
                    s.draining,
                    s.connect_time
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, key: &DataplaneKey) -> Result<(), StoreError> {
        let key = key.clone();
        self.call(move |conn| {
            conn.execute(
                "DELETE FROM sessions WHERE mesh = ?1 AND name = ?2",
                params![key.0, key.1],
            )?;
            Ok(())
        })
        .await
    }

    async fn heartbeat(&self, instance: &str) -> Result<(), StoreError> {
        let instance = instance.to_string();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO instances (id, heartbeat) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat",
                params![instance, unix_now()],
            )?;
            Ok(())
        })
        .await
    }

    async fn live_instances(&self, within: Duration) -> Result<Vec<String>, StoreError> {
        let since = unix_now() - within.as_millis() as i64;
        self.call(move |conn| {
            let mut stmt = conn.prepare("SELECT id FROM instances WHERE heartbeat >= ?1")?;
            let ids = stmt.query_map(params![since], |r| r.get(0))?;
            Ok(ids.collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    async fn forget_instances(&self, silent_for: Duration) -> Result<(), StoreError> {
        let before = unix_now() - silent_for.as_millis() as i64;
        self.call(move |conn| {
            conn.execute(
                "DELETE FROM instances WHERE heartbeat < ?1",
                params![before],
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(name: &str) -> Resource {
        let v = serde_json::json!({"type": "Mesh", "name": name});
        Resource::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn resources_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            let mut m = mesh("a");
            assert!(
                store
                    .upsert(&mut m, Origin::Api, Expect::Any)
                    .await
                    .unwrap()
                    .created
            );
            assert!(
                !store
                    .upsert(&mut m, Origin::Api, Expect::Any)
                    .await
                    .unwrap()
                    .created
            );
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let all = store.list().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].resource.meta.name, "a");
        assert!(all[0].resource.meta.creation_time.is_some());
        assert!(store.delete(ResourceType::Mesh, "", "a").await.unwrap());
        assert!(!store.delete(ResourceType::Mesh, "", "a").await.unwrap());
    }

    #[tokio::test]
    async fn a_write_that_expects_another_version_changes_nothing() {
        let store = SqliteStore::in_memory().unwrap();
        let first = store
            .upsert(&mut mesh("a"), Origin::Api, Expect::Absent)
            .await
            .unwrap();
        let again = store
            .upsert(&mut mesh("a"), Origin::Api, Expect::Absent)
            .await;
        assert!(
            matches!(again, Err(StoreError::Conflict { .. })),
            "{again:?}"
        );
        let second = store
            .upsert(&mut mesh("a"), Origin::Api, Expect::Version(first.version))
            .await
            .unwrap();
        assert!(second.version > first.version);
        let stale = store
            .upsert(&mut mesh("a"), Origin::Api, Expect::Version(first.version))
            .await;
        let err = stale.unwrap_err().to_string();
        assert!(
            err.contains(r#"resource conflict: type="Mesh" name="a""#),
            "{err}"
        );
        let stored = store
            .get(ResourceType::Mesh, "", "a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.version, second.version);
    }

    #[tokio::test]
    async fn the_first_secret_written_stays() {
        let store = SqliteStore::in_memory().unwrap();
        assert_eq!(store.secret("m", "k").await.unwrap(), None);
        let one = [("k".to_string(), "one".to_string())];
        let two = [("k".to_string(), "two".to_string())];
        assert_eq!(store.insert_secrets("m", &one).await.unwrap(), ["one"]);
        assert_eq!(store.insert_secrets("m", &two).await.unwrap(), ["one"]);
        store.delete_mesh_contents("m").await.unwrap();
        assert_eq!(store.secret("m", "k").await.unwrap(), None);
    }
}
