//! Bounds on guessing codes and on resends per account (issue 14): a daily wrong-code counter
//! and a daily resend counter on the user, which issuing a new verification does not reset, and
//! a code lifetime shorter than the link's.
//!
//! Code hashes become an HMAC with a server key from this release on: codes issued before it no
//! longer match (their links still work).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(super) struct Migration;

// SQLite adds one column per statement.
const UP: &str = r"
ALTER TABLE users ADD COLUMN wrong_codes integer NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN wrong_codes_since {ts};
ALTER TABLE users ADD COLUMN resends integer NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN resends_since {ts};
ALTER TABLE verifications ADD COLUMN code_expires_at {ts}
";

const DOWN: &str = r"
ALTER TABLE verifications DROP COLUMN code_expires_at;
ALTER TABLE users DROP COLUMN resends_since;
ALTER TABLE users DROP COLUMN resends;
ALTER TABLE users DROP COLUMN wrong_codes_since;
ALTER TABLE users DROP COLUMN wrong_codes
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
