//! The inbox: one row per event the email-service has started to handle.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(super) struct Migration;

const UP: &str = r"
CREATE TABLE inbox (
    event_id {uuid} PRIMARY KEY,
    event_type text NOT NULL,
    state text NOT NULL CHECK (state IN ('sending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    claimed_by {uuid},
    created_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    sent_at {ts}
);
CREATE INDEX inbox_updated_at ON inbox (updated_at)
";

const DOWN: &str = "DROP TABLE inbox";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::run_script(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::run_script(manager, DOWN).await
    }
}
