//! Users, verifications and idempotency keys. (The outbox table has its own migration, from
//! the `outbox` crate; databases created before that have it from this one, hence its
//! `IF NOT EXISTS`.)

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(super) struct Migration;

const UP: &str = r"
CREATE TABLE users (
    id {uuid} PRIMARY KEY,
    email text NOT NULL,
    password_hash text NOT NULL,
    first_name text,
    last_name text,
    status text NOT NULL CHECK (status IN ('pending_verification', 'verified')),
    created_at {ts} NOT NULL,
    verified_at {ts},
    reminders_sent integer NOT NULL DEFAULT 0,
    next_reminder_at {ts},
    last_resend_at {ts}
);
-- Uniqueness of the (normalised) email comes from this index, never from check-then-insert.
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE INDEX users_due_reminders ON users (next_reminder_at) WHERE next_reminder_at IS NOT NULL;

CREATE TABLE verifications (
    id {uuid} PRIMARY KEY,
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash text NOT NULL,
    code_hash text NOT NULL,
    created_at {ts} NOT NULL,
    expires_at {ts} NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    consumed_at {ts},
    superseded_at {ts}
);
CREATE UNIQUE INDEX verifications_token_hash_key ON verifications (token_hash);
CREATE INDEX verifications_by_user ON verifications (user_id, created_at);

CREATE TABLE idempotency_keys (
    key text PRIMARY KEY,
    request_hash text NOT NULL,
    response_status integer NOT NULL,
    response_body text NOT NULL,
    created_at {ts} NOT NULL,
    expires_at {ts} NOT NULL
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at)
";

const DOWN: &str = r"
DROP TABLE idempotency_keys;
DROP TABLE verifications;
DROP TABLE users
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::run_script(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::run_script(manager, DOWN).await
    }
}
