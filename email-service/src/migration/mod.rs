//! Schema migrations of the email-service inbox database (PostgreSQL and SQLite).
//!
//! Plain SQL per backend, one file per migration (sea-orm names each migration after its file),
//! the same conventions as the user-service.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

mod m20261122_000001_inbox;

/// Applies every migration of the inbox database.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261122_000001_inbox::Migration)]
    }
}

/// Runs a script whose type placeholders (`{uuid}`, `{ts}`) are replaced by the backend's column
/// types, one statement at a time.
async fn run_script(manager: &SchemaManager<'_>, script: &str) -> Result<(), DbErr> {
    let (uuid, ts) = match manager.get_database_backend() {
        DbBackend::Postgres => ("uuid", "timestamptz"),
        _ => ("blob", "text"),
    };
    let sql = script.replace("{uuid}", uuid).replace("{ts}", ts);
    let connection = manager.get_connection();
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        connection.execute_unprepared(statement).await?;
    }
    Ok(())
}

/// Connects to the inbox database and applies pending migrations.
///
/// # Errors
/// When the database is unreachable or a migration fails.
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let db = common::database::connect(url, max_connections).await?;
    Migrator::up(&db, None)
        .await
        .map_err(|e| anyhow::anyhow!("applying email-service migrations: {e}"))?;
    Ok(db)
}
