//! `koguma-cp migrate up`: brings a PostgreSQL store's schema to the one
//! this build runs on (Kuma's `kuma-cp migrate up`).

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
    // The error names the database already.
    let (from, to) = PgStore::migrate_up(&store.postgres).await?;
    if from == to {
        println!("the database is already at schema version {to}");
    } else {
        println!("the database was migrated from schema version {from} to {to}");
    }
    Ok(())
}
