//! The lease of an attempt in flight: `deliveries.leased_until`.
//!
//! `leased_until` is the fence of an attempt: the claim writes it (the same time it moves
//! `next_attempt_at` to), recording and putting back match it, and everything that ends or
//! restarts a delivery clears it. The attempt count cannot be the fence: a replay resets it,
//! so a stale attempt could match a newer claim's count.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(super) struct Migration;

const UP: &str = r"
ALTER TABLE deliveries ADD COLUMN leased_until {ts}
";

const DOWN: &str = r"
ALTER TABLE deliveries DROP COLUMN leased_until
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
