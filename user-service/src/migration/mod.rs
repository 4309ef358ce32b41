//! Schema migrations of the user-service database (PostgreSQL and SQLite).
//!
//! Migrations are plain SQL per backend: partial indexes and `SKIP LOCKED`-friendly layouts are
//! clearer in SQL than in a builder. One file per migration; sea-orm names each migration after
//! its file.

use sea_orm_migration::prelude::*;

mod m20261122_000001_initial;
mod m20261129_000001_guessing_bounds;
mod m20261129_000001_pending_expiry;
mod m20261206_000001_phone_verification;

/// Applies every migration of the user-service database.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations: Vec<Box<dyn MigrationTrait>> =
            vec![Box::new(m20261122_000001_initial::Migration)];
        migrations.extend(outbox::migrations());
        migrations.push(Box::new(m20261129_000001_guessing_bounds::Migration));
        migrations.push(Box::new(m20261129_000001_pending_expiry::Migration));
        migrations.push(Box::new(m20261206_000001_phone_verification::Migration));
        migrations
    }
}

/// Runs a migration script with the shared placeholders ([`common::database::run_sql_script`]).
async fn run_script(manager: &SchemaManager<'_>, script: &str) -> Result<(), DbErr> {
    common::database::run_sql_script(manager.get_connection(), script).await
}

/// Connects to the user-service database and applies pending migrations.
///
/// # Errors
/// When the database is unreachable or a migration fails.
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
) -> anyhow::Result<sea_orm::DatabaseConnection> {
    common::database::connect_and_migrate::<Migrator>(
        url,
        common::database::PoolOptions::new(max_connections),
    )
    .await
}
