//! Connecting to a service database (PostgreSQL or SQLite) with the pool settings every service
//! uses.

use std::time::Duration;

use anyhow::Context;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

/// Connects to `url` (`postgres://…` or `sqlite://…`).
///
/// SQLite runs with one connection in WAL mode: SQLite has a single writer anyway, and one
/// connection avoids `SQLITE_BUSY` between the process's own transactions.
///
/// # Errors
/// When the database is unreachable.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<DatabaseConnection> {
    let is_sqlite = url.starts_with("sqlite:");
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(if is_sqlite { 1 } else { max_connections })
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let db = Database::connect(options).await.with_context(|| {
        format!(
            "connecting to DATABASE_URL {}",
            crate::settings::redact_url(url)
        )
    })?;
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_unprepared("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON")
            .await
            .context("configuring SQLite")?;
    }
    Ok(db)
}

/// Runs a migration script written once for both backends: the placeholders `{uuid}`, `{ts}`,
/// `{json}` and `{seq}` become the backend's column types (PostgreSQL: `uuid`, `timestamptz`,
/// `jsonb`, `bigserial PRIMARY KEY`; SQLite: `blob`, `text`, `text`, `integer PRIMARY KEY
/// AUTOINCREMENT`), and the statements (separated by `;`, so none may appear in comments) run
/// one at a time.
///
/// # Errors
/// The first failing statement's error.
pub async fn run_sql_script(
    conn: &impl ConnectionTrait,
    script: &str,
) -> Result<(), sea_orm::DbErr> {
    let (uuid, ts, json, seq) = match conn.get_database_backend() {
        DbBackend::Postgres => ("uuid", "timestamptz", "jsonb", "bigserial PRIMARY KEY"),
        _ => ("blob", "text", "text", "integer PRIMARY KEY AUTOINCREMENT"),
    };
    let sql = script
        .replace("{uuid}", uuid)
        .replace("{ts}", ts)
        .replace("{json}", json)
        .replace("{seq}", seq);
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        conn.execute_unprepared(statement).await?;
    }
    Ok(())
}
