//! `koguma-cp migrate up`: brings a PostgreSQL store's schema to the one
//! this build runs on (Kuma's `kuma-cp migrate up`).

use anyhow::Context;

use crate::store::{PgStore, StoreArgs, StoreKind};

#[derive(clap::Subcommand)]
pub enum Migrate {
    /// Apply the migrations the database lacks (safe to run again).
    Up {
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(what: Migrate) -> anyhow::Result<()> {
    let Migrate::Up { store } = what;
    if store.kind != StoreKind::Postgres {
        println!(
            "the {:?} store needs no migration: koguma-cp run creates its schema",
            store.kind
        );
        return Ok(());
    }
    let (from, to) = PgStore::migrate_up(&store.postgres)
        .await
        .with_context(|| format!("migrating {}", store.postgres.describe()))?;
    if from == to {
        println!("the database is already at schema version {to}");
    } else {
        println!("the database was migrated from schema version {from} to {to}");
    }
    Ok(())
}
