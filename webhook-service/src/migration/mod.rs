//! Schema migrations of the webhook-service database (PostgreSQL and SQLite): plain SQL per
//! migration with the shared placeholders, the same conventions as the other services.

use sea_orm_migration::prelude::*;

mod m20261207_000001_initial;
mod m20261207_000002_lease;
mod m20261208_000001_partial_indexes;

/// Applies every migration of the webhook-service database.
pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261207_000001_initial::Migration),
            Box::new(m20261207_000002_lease::Migration),
            Box::new(m20261208_000001_partial_indexes::Migration),
        ]
    }
}

/// Runs a migration script with the shared placeholders ([`common::database::run_sql_script`]).
async fn run_script(manager: &SchemaManager<'_>, script: &str) -> Result<(), DbErr> {
    common::database::run_sql_script(manager.get_connection(), script).await
}

/// Connects to the database and applies pending migrations (under an advisory lock, so
/// instances starting together migrate once).
///
/// # Errors
/// When the database is unreachable or a migration fails.
pub(crate) async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
) -> anyhow::Result<sea_orm::DatabaseConnection> {
    common::database::connect_and_migrate::<Migrator>(
        url,
        common::database::PoolOptions::new(max_connections),
    )
    .await
}
