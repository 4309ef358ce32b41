//! The `outbox` table, created by a migration that every writer's migrator runs (the
//! user-service's today), so the table has one definition.

use sea_orm_migration::prelude::*;

/// `seq` orders publication and `id` is the event id. The partial indexes serve the relay:
/// pending rows in sequence order (claim, backlog), pending rows by aggregate (the per-user
/// ordering check), and published rows by age (retention). `IF NOT EXISTS`: databases created
/// before the outbox had its own migration already have the table.
const UP: &str = r"
CREATE TABLE IF NOT EXISTS outbox (
    seq {seq},
    id {uuid} NOT NULL UNIQUE,
    aggregate_id {uuid} NOT NULL,
    event_type text NOT NULL,
    routing_key text NOT NULL,
    payload {json} NOT NULL,
    headers {json} NOT NULL,
    created_at {ts} NOT NULL,
    published_at {ts},
    attempts integer NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_unpublished_by_aggregate ON outbox (aggregate_id, seq)
    WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_published_at ON outbox (published_at)
    WHERE published_at IS NOT NULL
";

const DOWN: &str = "DROP TABLE outbox";

/// Creates the `outbox` table; add it to the migrator of any database a writer enqueues into.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &'static str {
        "m20261128_000001_outbox"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        common::database::run_sql_script(manager.get_connection(), UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        common::database::run_sql_script(manager.get_connection(), DOWN).await
    }
}

/// A migrator with the outbox table alone.
struct OutboxMigrator;

impl MigratorTrait for OutboxMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Migration)]
    }
}

/// Migrates a database that holds the outbox and nothing else (the relay's tests and
/// benchmark); a service database runs [`Migration`] from its own migrator instead.
///
/// # Errors
/// Any database error.
pub async fn migrate_outbox_only(db: &sea_orm::DatabaseConnection) -> Result<(), DbErr> {
    OutboxMigrator::up(db, None).await
}
