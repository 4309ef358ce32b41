//! Phone verification by SMS code (issue 12): the number on the user, one row per phone
//! verification (a random nonce the code is derived from, never the code), and one row per
//! send request, sent or blocked, which the velocity limits count.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(super) struct Migration;

// SQLite adds one column per statement.
const UP: &str = r"
ALTER TABLE users ADD COLUMN phone text;
ALTER TABLE users ADD COLUMN phone_verified_at {ts};

CREATE TABLE phone_verifications (
    id {uuid} PRIMARY KEY,
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    phone text NOT NULL,
    nonce text NOT NULL,
    code_length integer NOT NULL,
    status text NOT NULL CHECK (status IN
        ('pending', 'verified', 'expired', 'max_attempts_reached', 'canceled')),
    attempts integer NOT NULL DEFAULT 0,
    sends integer NOT NULL DEFAULT 0,
    last_sent_at {ts},
    created_at {ts} NOT NULL,
    expires_at {ts} NOT NULL,
    verified_at {ts}
);
-- A number's current verification is its newest, and the failed-check cap sums its rows.
CREATE INDEX phone_verifications_by_phone ON phone_verifications (phone, created_at);
CREATE INDEX phone_verifications_by_user ON phone_verifications (user_id);

CREATE TABLE phone_sends (
    id {uuid} PRIMARY KEY,
    verification_id {uuid},
    phone text NOT NULL,
    prefix text NOT NULL,
    client_ip text NOT NULL,
    created_at {ts} NOT NULL,
    send_number integer,
    blocked_reason text
);
CREATE INDEX phone_sends_by_phone ON phone_sends (phone, created_at);
CREATE INDEX phone_sends_by_prefix ON phone_sends (prefix, created_at);
CREATE INDEX phone_sends_by_client ON phone_sends (client_ip, created_at);
CREATE INDEX phone_sends_by_time ON phone_sends (created_at)
";

const DOWN: &str = r"
DROP TABLE phone_sends;
DROP TABLE phone_verifications;
ALTER TABLE users DROP COLUMN phone_verified_at;
ALTER TABLE users DROP COLUMN phone
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
