//! Squatting protection (issue 14, item 6): `users.last_attempt_notice_at`, the rate limit of the
//! "someone tried to sign up with your address" mail, and an index that lets the expiry sweep
//! find old pending accounts without scanning the verified ones.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(super) struct Migration;

const UP: &str = r"
ALTER TABLE users ADD COLUMN last_attempt_notice_at {ts};
CREATE INDEX users_pending_by_age ON users (created_at) WHERE status = 'pending_verification'
";

const DOWN: &str = r"
DROP INDEX users_pending_by_age;
ALTER TABLE users DROP COLUMN last_attempt_notice_at
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
