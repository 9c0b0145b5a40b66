//! Which store a control plane runs on (Kuma's `store.type`), as flags and
//! Kuma's variables, shared by `run` and `migrate`.

use std::path::Path;

use super::{PgStore, PostgresArgs, ResourceStore, SqliteStore, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// SQLite file in --data-dir: resources survive restarts; one instance.
    Sqlite,
    /// In memory: everything is gone when the CP stops.
    Memory,
    /// PostgreSQL (KUMA_STORE_POSTGRES_*): shared by several instances.
    Postgres,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    #[arg(
        long = "store",
        value_enum,
        default_value = "sqlite",
        env = "KUMA_STORE_TYPE"
    )]
    pub kind: StoreKind,
    #[command(flatten)]
    pub postgres: PostgresArgs,
}

impl StoreArgs {
    pub async fn open(
        &self,
        data_dir: &Path,
        instance: &str,
    ) -> Result<Box<dyn ResourceStore>, StoreError> {
        Ok(match self.kind {
            StoreKind::Sqlite => Box::new(SqliteStore::open(data_dir)?),
            StoreKind::Memory => Box::new(SqliteStore::in_memory()?),
            StoreKind::Postgres => Box::new(PgStore::open(&self.postgres, instance).await?),
        })
    }

    pub fn describe(&self, data_dir: &Path) -> String {
        match self.kind {
            StoreKind::Sqlite => format!("sqlite {}", data_dir.join("koguma.db").display()),
            StoreKind::Memory => "memory".into(),
            StoreKind::Postgres => self.postgres.describe(),
        }
    }
}
