//! The per-address daily mail cap (`MAX_MAILS_PER_ADDRESS_PER_DAY`): each inbox row of a capped
//! mail carries its recipient's key (a SHA-256 of the normalised address, not the address), an
//! index finds an address's recent rows, and the `suppressed` state records a mail the cap kept
//! back.
//!
//! Widening the state CHECK differs per backend: PostgreSQL replaces the constraint, SQLite
//! cannot alter one and rebuilds the table (copy, drop, rename).

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub(super) struct Migration;

const POSTGRES_UP: &str = r"
ALTER TABLE inbox ADD COLUMN recipient_key text;
ALTER TABLE inbox DROP CONSTRAINT inbox_state_check;
ALTER TABLE inbox ADD CONSTRAINT inbox_state_check
    CHECK (state IN ('sending', 'sent', 'failed', 'suppressed'));
CREATE INDEX inbox_recipient_recent ON inbox (recipient_key, updated_at)
    WHERE recipient_key IS NOT NULL
";

const POSTGRES_DOWN: &str = r"
DROP INDEX inbox_recipient_recent;
DELETE FROM inbox WHERE state = 'suppressed';
ALTER TABLE inbox DROP CONSTRAINT inbox_state_check;
ALTER TABLE inbox ADD CONSTRAINT inbox_state_check CHECK (state IN ('sending', 'sent', 'failed'));
ALTER TABLE inbox DROP COLUMN recipient_key
";

const SQLITE_UP: &str = r"
CREATE TABLE inbox_new (
    event_id {uuid} PRIMARY KEY,
    event_type text NOT NULL,
    state text NOT NULL CHECK (state IN ('sending', 'sent', 'failed', 'suppressed')),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    claimed_by {uuid},
    created_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    sent_at {ts},
    recipient_key text
);
INSERT INTO inbox_new (event_id, event_type, state, attempts, last_error, claimed_by,
    created_at, updated_at, sent_at)
    SELECT event_id, event_type, state, attempts, last_error, claimed_by, created_at,
        updated_at, sent_at FROM inbox;
DROP TABLE inbox;
ALTER TABLE inbox_new RENAME TO inbox;
CREATE INDEX inbox_updated_at ON inbox (updated_at);
CREATE INDEX inbox_recipient_recent ON inbox (recipient_key, updated_at)
    WHERE recipient_key IS NOT NULL
";

const SQLITE_DOWN: &str = r"
CREATE TABLE inbox_old (
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
INSERT INTO inbox_old SELECT event_id, event_type, state, attempts, last_error, claimed_by,
    created_at, updated_at, sent_at FROM inbox WHERE state <> 'suppressed';
DROP TABLE inbox;
ALTER TABLE inbox_old RENAME TO inbox;
CREATE INDEX inbox_updated_at ON inbox (updated_at)
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let script = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_UP,
            _ => SQLITE_UP,
        };
        super::run_script(manager, script).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let script = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_DOWN,
            _ => SQLITE_DOWN,
        };
        super::run_script(manager, script).await
    }
}
