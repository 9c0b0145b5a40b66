//! The shared store: PostgreSQL, for several control-plane instances. A
//! pool serves the store calls; one more connection per instance carries
//! the change feed and the leader election (`control`).

mod config;
mod control;
mod schema;

pub use config::PostgresArgs;

use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use koguma_api::{Resource, ResourceType};
use tokio::sync::{mpsc, watch};

use super::row::{self, COLUMNS, Row, SESSION_COLUMNS};
use super::{Change, Expect, Origin, ResourceStore, Session, StoreError, StoredResource, Written};
use crate::catalog::DataplaneKey;

/// A PostgreSQL error with what the server said, when it said something.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres(describe(&e))
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => StoreError::Postgres(other.to_string()),
    }
}

pub struct PgStore {
    pool: Pool,
    changes: Mutex<Option<mpsc::Receiver<Change>>>,
    leader: watch::Receiver<bool>,
}

impl PgStore {
    /// Connects, checks the schema and starts the change feed and the
    /// campaign for leadership as `instance`.
    pub async fn open(args: &PostgresArgs, instance: &str) -> Result<PgStore, StoreError> {
        args.validate()?;
        let tls = args.tls()?;
        let config = args.pg_config(&format!("koguma-cp {instance}"));
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let wait = Some(Duration::from_secs(args.connection_timeout));
        let pool = Pool::builder(manager)
            .max_size(args.max_open_connections)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait,
                create: wait,
                recycle: wait,
            })
            .build()
            .map_err(|e| StoreError::Postgres(e.to_string()))?;
        let client = pool.get().await.map_err(|e| {
            StoreError::Postgres(format!(
                "cannot connect to {}: {}",
                args.describe(),
                pool_error(e)
            ))
        })?;
        schema::check(&client).await?;
        drop(client);
        let (changes, leader) = control::start(config, tls);
        Ok(PgStore {
            pool,
            changes: Mutex::new(Some(changes)),
            leader,
        })
    }

    /// `koguma-cp migrate up`.
    pub async fn migrate_up(args: &PostgresArgs) -> Result<(i64, i64), StoreError> {
        args.validate()?;
        let (mut client, connection) = args
            .pg_config("koguma-cp migrate")
            .connect(args.tls()?)
            .await
            .map_err(|e| {
                StoreError::Postgres(format!(
                    "cannot connect to {}: {}",
                    args.describe(),
                    describe(&e)
                ))
            })?;
        let conn = tokio::spawn(connection);
        let result = schema::migrate_up(&mut client).await;
        drop(client);
        let _ = conn.await;
        result
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

fn read_row(r: &tokio_postgres::Row) -> Row {
    Row {
        kind: r.get(0),
        mesh: r.get(1),
        name: r.get(2),
        spec: r.get(3),
        labels: r.get(4),
        origin: r.get(5),
        version: r.get(6),
        created: r.get(7),
        modified: r.get(8),
    }
}

fn read_session(r: &tokio_postgres::Row) -> Option<Session> {
    let kind: String = r.get(2);
    Some(Session {
        rtype: ResourceType::from_kind(&kind)?,
        key: (r.get(0), r.get(1)),
        instance: r.get(3),
        draining: r.get(4),
        connect_time: r.get(5),
    })
}

#[async_trait::async_trait]
impl ResourceStore for PgStore {
    async fn list(&self) -> Result<Vec<StoredResource>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {COLUMNS} FROM resources ORDER BY type, mesh, name"),
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(|r| read_row(r).decode()).collect()
    }

    async fn get(
        &self,
        rtype: ResourceType,
        mesh: &str,
        name: &str,
    ) -> Result<Option<StoredResource>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM resources WHERE type = $1 AND mesh = $2 AND name = $3"
                ),
                &[&rtype.kind(), &mesh, &name],
            )
            .await
            .map_err(pg)?;
        row.map(|r| read_row(&r).decode()).transpose()
    }

    async fn upsert(
        &self,
        resource: &mut Resource,
        origin: Origin,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        let rtype = resource.resource_type();
        let (kind, mesh, name) = (rtype.kind(), &resource.meta.mesh, &resource.meta.name);
        let (spec, labels) = row::encode(resource);
        let now = super::now_rfc3339();
        let origin = origin.as_str();
        let client = self.client().await?;
        // `xmax = 0`: the row was inserted, not updated.
        let row = match expect {
            Expect::Any => client.query_opt(
                "INSERT INTO resources (type, mesh, name, spec, labels, origin, version, creation_time, modification_time)
                 VALUES ($1, $2, $3, $4, $5, $6, nextval('resource_versions'), $7, $7)
                 ON CONFLICT (type, mesh, name) DO UPDATE SET
                   spec = excluded.spec, labels = excluded.labels, origin = excluded.origin,
                   version = excluded.version, modification_time = excluded.modification_time
                 RETURNING version, creation_time, xmax = 0",
                &[&kind, mesh, name, &spec, &labels, &origin, &now],
            ).await,
            Expect::Absent => client.query_opt(
                "INSERT INTO resources (type, mesh, name, spec, labels, origin, version, creation_time, modification_time)
                 VALUES ($1, $2, $3, $4, $5, $6, nextval('resource_versions'), $7, $7)
                 ON CONFLICT (type, mesh, name) DO NOTHING
                 RETURNING version, creation_time, true",
                &[&kind, mesh, name, &spec, &labels, &origin, &now],
            ).await,
            // A concurrent update of the row makes this one re-check its
            // WHERE against the winner's version, which no longer matches.
            Expect::Version(version) => client.query_opt(
                "UPDATE resources SET spec = $4, labels = $5, origin = $6,
                   version = nextval('resource_versions'), modification_time = $7
                 WHERE type = $1 AND mesh = $2 AND name = $3 AND version = $8
                 RETURNING version, creation_time, false",
                &[&kind, mesh, name, &spec, &labels, &origin, &now, &version],
            ).await,
        }
        .map_err(pg)?
        .ok_or_else(|| StoreError::conflict(rtype, mesh, name))?;
        resource.meta.creation_time = Some(row.get(1));
        resource.meta.modification_time = Some(now);
        Ok(Written {
            version: row.get(0),
            created: row.get(2),
        })
    }

    async fn delete(
        &self,
        rtype: ResourceType,
        mesh: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM resources WHERE type = $1 AND mesh = $2 AND name = $3",
                &[&rtype.kind(), &mesh, &name],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn secret(&self, mesh: &str, name: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT data FROM secrets WHERE mesh = $1 AND name = $2",
                &[&mesh, &name],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn insert_secrets(
        &self,
        mesh: &str,
        secrets: &[(String, String)],
    ) -> Result<Vec<String>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let now = super::now_rfc3339();
        let mut stored = Vec::new();
        // A racing transaction's insert of the same name waits for this
        // one to end, then inserts nothing and reads what this one wrote.
        for (name, data) in secrets {
            tx.execute(
                "INSERT INTO secrets (mesh, name, data, creation_time) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (mesh, name) DO NOTHING",
                &[&mesh, name, data, &now],
            )
            .await
            .map_err(pg)?;
            let row = tx
                .query_one(
                    "SELECT data FROM secrets WHERE mesh = $1 AND name = $2",
                    &[&mesh, name],
                )
                .await
                .map_err(pg)?;
            stored.push(row.get(0));
        }
        tx.commit().await.map_err(pg)?;
        Ok(stored)
    }

    async fn put_secret(&self, mesh: &str, name: &str, data: &str) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO secrets (mesh, name, data, creation_time) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (mesh, name) DO UPDATE SET data = excluded.data",
                &[&mesh, &name, &data, &super::now_rfc3339()],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn delete_mesh_contents(&self, mesh: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        for table in ["secrets", "resources", "sessions"] {
            tx.execute(&format!("DELETE FROM {table} WHERE mesh = $1"), &[&mesh])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn sessions(&self) -> Result<Vec<Session>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(&format!("SELECT {SESSION_COLUMNS} FROM sessions"), &[])
            .await
            .map_err(pg)?;
        Ok(rows.iter().filter_map(read_session).collect())
    }

    async fn session(&self, key: &DataplaneKey) -> Result<Option<Session>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE mesh = $1 AND name = $2"),
                &[&key.0, &key.1],
            )
            .await
            .map_err(pg)?;
        Ok(row.as_ref().and_then(read_session))
    }

    async fn put_session(&self, s: &Session) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO sessions (mesh, name, type, instance, draining, connect_time)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (mesh, name) DO UPDATE SET type = excluded.type,
                   instance = excluded.instance, draining = excluded.draining,
                   connect_time = excluded.connect_time",
                &[
                    &s.key.0,
                    &s.key.1,
                    &s.rtype.kind(),
                    &s.instance,
                    &s.draining,
                    &s.connect_time,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn delete_session(&self, key: &DataplaneKey) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM sessions WHERE mesh = $1 AND name = $2",
                &[&key.0, &key.1],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn heartbeat(&self, instance: &str) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO instances (id, heartbeat) VALUES ($1, now())
                 ON CONFLICT (id) DO UPDATE SET heartbeat = now()",
                &[&instance],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn live_instances(&self, within: Duration) -> Result<Vec<String>, StoreError> {
        let secs = within.as_secs_f64();
        // The server's clock for both ends: instances' clocks may differ.
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id FROM instances WHERE heartbeat >= now() - make_interval(secs => $1)",
                &[&secs],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn forget_instances(&self, silent_for: Duration) -> Result<(), StoreError> {
        let secs = silent_for.as_secs_f64();
        self.client()
            .await?
            .execute(
                "DELETE FROM instances WHERE heartbeat < now() - make_interval(secs => $1)",
                &[&secs],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    fn changes(&self) -> Option<mpsc::Receiver<Change>> {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn leadership(&self) -> Option<watch::Receiver<bool>> {
        Some(self.leader.clone())
    }
}
