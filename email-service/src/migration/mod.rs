//! Schema migrations of the email-service inbox database (PostgreSQL and SQLite).
//!
//! Plain SQL per backend, one file per migration (sea-orm names each migration after its file),
//! the same conventions as the user-service.

use sea_orm_migration::prelude::*;

mod m20261122_000001_inbox;
mod m20261129_000001_daily_cap;

/// Applies every migration of the inbox database.
pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_inbox::Migration),
            Box::new(m20261129_000001_daily_cap::Migration),
        ]
    }
}

/// Runs a migration script with the shared placeholders ([`common::database::run_sql_script`]).
async fn run_script(manager: &SchemaManager<'_>, script: &str) -> Result<(), DbErr> {
    common::database::run_sql_script(manager.get_connection(), script).await
}

/// Connects to the inbox database and applies pending migrations.
///
/// On SQLite the inbox skips the fsync per commit (`synchronous = NORMAL`; two commits per mail
/// made it the bottleneck). That stays safe against process crashes; a power loss may roll back
/// the last commits, and the worst that does to the inbox is a resend (a `sent` row lost after
/// its message was acked is never consulted again). Use PostgreSQL in production.
///
/// # Errors
/// When the database is unreachable or a migration fails.
pub(crate) async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
) -> anyhow::Result<sea_orm::DatabaseConnection> {
    common::database::connect_and_migrate::<Migrator>(
        url,
        common::database::PoolOptions::new(max_connections).sqlite_synchronous_normal(),
    )
    .await
}
