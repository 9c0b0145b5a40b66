use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use koguma_api::{Resource, ResourceType};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Origin, ResourceStore, StoreError, StoredResource};

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
";

pub struct SqliteStore {
    // rusqlite connections are not Sync. Statements are short and never held
    // across an await, so one lock is enough at this scale.
    conn: Mutex<Connection>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
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
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A statement that panicked leaves SQLite consistent (it rolls back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn decode(row: Row) -> Result<StoredResource, StoreError> {
    let (kind, mesh, name, spec, labels, origin, created, modified) = row;
    let corrupt = |reason: String| StoreError::Corrupt {
        kind: kind.clone(),
        mesh: mesh.clone(),
        name: name.clone(),
        reason,
    };
    let mut obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
    obj.insert("type".into(), kind.clone().into());
    obj.insert("name".into(), name.clone().into());
    if !mesh.is_empty() {
        obj.insert("mesh".into(), mesh.clone().into());
    }
    let labels: serde_json::Value =
        serde_json::from_str(&labels).map_err(|e| corrupt(e.to_string()))?;
    obj.insert("labels".into(), labels);
    obj.insert("creationTime".into(), created.into());
    obj.insert("modificationTime".into(), modified.into());
    let resource =
        Resource::from_value(serde_json::Value::Object(obj)).map_err(|e| corrupt(e.to_string()))?;
    Ok(StoredResource {
        resource,
        origin: Origin::parse(&origin),
    })
}

impl ResourceStore for SqliteStore {
    fn list(&self) -> Result<Vec<StoredResource>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT type, mesh, name, spec, labels, origin, creation_time, modification_time
             FROM resources ORDER BY type, mesh, name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(decode(row?)?);
        }
        Ok(out)
    }

    fn upsert(&self, resource: &mut Resource, origin: Origin) -> Result<bool, StoreError> {
        let kind = resource.resource_type().kind();
        let now = now_rfc3339();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let existing: Option<(String, i64)> = tx
            .query_row(
                "SELECT creation_time, version FROM resources WHERE type = ?1 AND mesh = ?2 AND name = ?3",
                params![kind, resource.meta.mesh, resource.meta.name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (created, version) = match &existing {
            Some((c, v)) => (c.clone(), v + 1),
            None => (now.clone(), 1),
        };
        let spec = resource.spec_value().to_string();
        let labels = serde_json::json!(resource.meta.labels).to_string();
        tx.execute(
            "INSERT INTO resources (type, mesh, name, spec, labels, origin, version, creation_time, modification_time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (type, mesh, name) DO UPDATE SET
               spec = excluded.spec, labels = excluded.labels, origin = excluded.origin,
               version = excluded.version, modification_time = excluded.modification_time",
            params![kind, resource.meta.mesh, resource.meta.name, spec, labels, origin.as_str(), version, created, now],
        )?;
        tx.commit()?;
        resource.meta.creation_time = Some(created);
        resource.meta.modification_time = Some(now);
        Ok(existing.is_none())
    }

    fn delete(&self, rtype: ResourceType, mesh: &str, name: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM resources WHERE type = ?1 AND mesh = ?2 AND name = ?3",
            params![rtype.kind(), mesh, name],
        )?;
        Ok(n > 0)
    }

    fn secret(&self, mesh: &str, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT data FROM secrets WHERE mesh = ?1 AND name = ?2",
                params![mesh, name],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn insert_secret(&self, mesh: &str, name: &str, data: &str) -> Result<String, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO secrets (mesh, name, data, creation_time) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (mesh, name) DO NOTHING",
            params![mesh, name, data, now_rfc3339()],
        )?;
        let stored: String = tx.query_row(
            "SELECT data FROM secrets WHERE mesh = ?1 AND name = ?2",
            params![mesh, name],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(stored)
    }

    fn put_secret(&self, mesh: &str, name: &str, data: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO secrets (mesh, name, data, creation_time) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (mesh, name) DO UPDATE SET data = excluded.data",
            params![mesh, name, data, now_rfc3339()],
        )?;
        Ok(())
    }

    fn delete_mesh_contents(&self, mesh: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM secrets WHERE mesh = ?1", params![mesh])?;
        tx.execute("DELETE FROM resources WHERE mesh = ?1", params![mesh])?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(name: &str) -> Resource {
        let v = serde_json::json!({"type": "Mesh", "name": name});
        Resource::from_value(v).unwrap()
    }

    #[test]
    fn resources_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            let mut m = mesh("a");
            assert!(store.upsert(&mut m, Origin::Api).unwrap());
            assert!(!store.upsert(&mut m, Origin::Api).unwrap());
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let all = store.list().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].resource.meta.name, "a");
        assert!(all[0].resource.meta.creation_time.is_some());
        assert!(store.delete(ResourceType::Mesh, "", "a").unwrap());
        assert!(!store.delete(ResourceType::Mesh, "", "a").unwrap());
    }

    #[test]
    fn the_first_secret_written_stays() {
        let store = SqliteStore::in_memory().unwrap();
        assert_eq!(store.secret("m", "k").unwrap(), None);
        assert_eq!(store.insert_secret("m", "k", "one").unwrap(), "one");
        assert_eq!(store.insert_secret("m", "k", "two").unwrap(), "one");
        store.delete_mesh_contents("m").unwrap();
        assert_eq!(store.secret("m", "k").unwrap(), None);
    }
}
