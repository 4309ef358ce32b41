//! Schema migrations of the email-service inbox database (PostgreSQL and SQLite).
//!
//! Plain SQL per backend, one file per migration (sea-orm names each migration after its file),
//! the same conventions as the user-service.

use anyhow::Context as _;
use sea_orm_migration::prelude::*;

mod m20261122_000001_inbox;

/// Applies every migration of the inbox database.
pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261122_000001_inbox::Migration)]
    }
}

/// Runs a migration script with the shared placeholders ([`common::database::run_sql_script`]).
async fn run_script(manager: &SchemaManager<'_>, script: &str) -> Result<(), DbErr> {
    common::database::run_sql_script(manager.get_connection(), script).await
}

/// SQLite like `common::database::connect` (one connection, WAL), plus `synchronous = NORMAL`
/// on every connection the pool opens. In WAL mode that skips the fsync per commit (two commits
/// per mail: it was the bottleneck) and stays safe against process crashes; a power loss may
/// roll back the last commits, and the worst that does to the inbox is a resend (a `sent` row
/// lost after its message was acked is never consulted again). Use PostgreSQL in production.
async fn connect_sqlite(url: &str) -> anyhow::Result<sea_orm::DatabaseConnection> {
    use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
    let mut options = sea_orm::ConnectOptions::new(url);
    options
        .max_connections(1)
        .connect_timeout(std::time::Duration::from_secs(5))
        .acquire_timeout(std::time::Duration::from_secs(10))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
        });
    sea_orm::Database::connect(options).await.with_context(|| {
        format!(
            "connecting to DATABASE_URL {}",
            common::settings::redact_url(url)
        )
    })
}

/// Connects to the inbox database and applies pending migrations.
///
/// # Errors
/// When the database is unreachable or a migration fails.
pub(crate) async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let db = if url.starts_with("sqlite:") {
        connect_sqlite(url).await?
    } else {
        common::database::connect(url, max_connections).await?
    };
    Migrator::up(&db, None)
        .await
        .context("applying email-service migrations")?;
    Ok(db)
}
