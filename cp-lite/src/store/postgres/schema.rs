//! The PostgreSQL schema, as numbered migrations. `koguma-cp migrate up`
//! applies those the database lacks; `run` only checks, and refuses a
//! schema other than the one it was built for, saying what to run.

use tokio_postgres::Client;

use crate::store::StoreError;

/// Each migration, in order; a database at version N has had the first N.
const MIGRATIONS: &[&str] = &[
    // 1: resources, secrets, sessions and instances; every change of the
    // first three is announced on `koguma_changes`.
    r#"
CREATE SEQUENCE resource_versions;
CREATE TABLE resources (
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
CREATE TABLE secrets (
    mesh          TEXT NOT NULL,
    name          TEXT NOT NULL,
    data          TEXT NOT NULL,
    creation_time TEXT NOT NULL,
    PRIMARY KEY (mesh, name)
);
CREATE TABLE sessions (
    mesh         TEXT NOT NULL,
    name         TEXT NOT NULL,
    type         TEXT NOT NULL,
    instance     TEXT NOT NULL,
    draining     BOOLEAN NOT NULL,
    connect_time TEXT NOT NULL,
    PRIMARY KEY (mesh, name)
);
CREATE TABLE instances (
    id        TEXT PRIMARY KEY,
    heartbeat TIMESTAMPTZ NOT NULL
);
CREATE FUNCTION koguma_announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed JSONB;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := to_jsonb(OLD); ELSE changed := to_jsonb(NEW); END IF;
    PERFORM pg_notify('koguma_changes', json_build_object(
        'table', TG_TABLE_NAME,
        'type', changed->>'type',
        'mesh', changed->>'mesh',
        'name', changed->>'name')::text);
    RETURN NULL;
END $$;
CREATE TRIGGER resources_changed AFTER INSERT OR UPDATE OR DELETE ON resources
    FOR EACH ROW EXECUTE FUNCTION koguma_announce_change();
CREATE TRIGGER secrets_changed AFTER INSERT OR UPDATE OR DELETE ON secrets
    FOR EACH ROW EXECUTE FUNCTION koguma_announce_change();
CREATE TRIGGER sessions_changed AFTER INSERT OR UPDATE OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION koguma_announce_change();
"#,
];

/// The schema version this build runs on.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Serializes `migrate up` runs against one database.
const MIGRATE_LOCK: i64 = 0x6b6f_6775_6d61_0001;

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres(super::describe(&e))
}

/// What `run` says when the schema is not the one it needs.
fn mismatch(have: i64) -> StoreError {
    StoreError::Schema(if have > SCHEMA_VERSION {
        format!(
            "the database schema is at version {have}, newer than this koguma-cp knows ({SCHEMA_VERSION}): it was migrated by a newer koguma-cp; run that version"
        )
    } else {
        format!(
            "the database schema is at version {have}, this koguma-cp needs version {SCHEMA_VERSION}: run \"koguma-cp migrate up\" (with the same store settings) first"
        )
    })
}

async fn current(client: &Client) -> Result<Option<i64>, StoreError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('koguma_schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt("SELECT version FROM koguma_schema_migrations", &[])
        .await
        .map_err(pg)?;
    Ok(Some(row.map_or(0, |r| r.get(0))))
}

/// Refuses a database whose schema is not `SCHEMA_VERSION`.
pub async fn check(client: &Client) -> Result<(), StoreError> {
    match current(client).await? {
        None => Err(StoreError::Schema(
            "the database is not migrated: run \"koguma-cp migrate up\" (with the same store settings) first".into(),
        )),
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        Some(v) => Err(mismatch(v)),
    }
}

/// Applies the migrations the database lacks, in one transaction; returns
/// the versions before and after. Safe to run again, and from several
/// places at once.
pub async fn migrate_up(client: &mut Client) -> Result<(i64, i64), StoreError> {
    let tx = client.transaction().await.map_err(pg)?;
    // "already exists, skipping" is no news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS koguma_schema_migrations (version BIGINT NOT NULL)",
    )
    .await
    .map_err(pg)?;
    let have: i64 = match tx
        .query_opt("SELECT version FROM koguma_schema_migrations", &[])
        .await
        .map_err(pg)?
    {
        Some(r) => r.get(0),
        None => {
            tx.execute(
                "INSERT INTO koguma_schema_migrations (version) VALUES (0)",
                &[],
            )
            .await
            .map_err(pg)?;
            0
        }
    };
    if have > SCHEMA_VERSION {
        return Err(mismatch(have));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(have as usize) {
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Schema(format!(
                "migration {} failed: {}",
                i + 1,
                super::describe(&e)
            ))
        })?;
    }
    tx.execute(
        "UPDATE koguma_schema_migrations SET version = $1",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok((have, SCHEMA_VERSION))
}
