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

/// `redacted_payload`: what `payload` becomes when the row is marked published, the same JSON
/// with the event's secret fields blanked (NULL for an event without secrets). Written with the
/// row, so marking a batch stays one statement that decodes nothing.
const ADD_REDACTED_PAYLOAD: &str = "ALTER TABLE outbox ADD COLUMN redacted_payload {json}";

const DROP_REDACTED_PAYLOAD: &str = "ALTER TABLE outbox DROP COLUMN redacted_payload";

/// Every migration of the outbox table, in order: add them all to the migrator of any database
/// a writer enqueues into.
pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(Migration), Box::new(RedactedPayloadMigration)]
}

/// Creates the `outbox` table (the first of [`migrations`]).
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

/// Adds the `redacted_payload` column (the second of [`migrations`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactedPayloadMigration;

impl MigrationName for RedactedPayloadMigration {
    fn name(&self) -> &'static str {
        "m20261129_000001_outbox_redacted_payload"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RedactedPayloadMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        common::database::run_sql_script(manager.get_connection(), ADD_REDACTED_PAYLOAD).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        common::database::run_sql_script(manager.get_connection(), DROP_REDACTED_PAYLOAD).await
    }
}

/// A migrator with the outbox table alone.
struct OutboxMigrator;

impl MigratorTrait for OutboxMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        migrations()
    }
}

/// Migrates a database that holds the outbox and nothing else (the relay's tests and
/// benchmark); a service database runs [`migrations`] from its own migrator instead.
///
/// # Errors
/// Any database error.
pub async fn migrate_outbox_only(db: &sea_orm::DatabaseConnection) -> Result<(), DbErr> {
    OutboxMigrator::up(db, None).await
}
