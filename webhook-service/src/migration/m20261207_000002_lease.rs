//! The lease of an attempt in flight (`deliveries.leased_until`), and the due index keyed by
//! endpoint too.
//!
//! `leased_until` is the fence of an attempt: the claim writes it (the same time it moves
//! `next_attempt_at` to), recording and putting back match it, and everything that ends or
//! restarts a delivery clears it. The attempt count cannot be the fence: a replay resets it,
//! so a stale attempt could match a newer claim's count.
//!
//! `deliveries_due` gains `endpoint_id` and `id`: the claim's inner scan (`id`, `endpoint_id`,
//! due first, saturated endpoints left out) reads the index alone (an index-only scan on
//! PostgreSQL), so the saturated endpoints' rows are skipped in the index instead of each being
//! fetched from the table and then dropped (with `endpoint_id` alone the scan still fetches
//! every row for its `id`). It still serves every scan by `next_attempt_at`, so it replaces the
//! old index.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(super) struct Migration;

const UP: &str = r"
ALTER TABLE deliveries ADD COLUMN leased_until {ts};
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, endpoint_id, id) WHERE status = 'pending'
";

const DOWN: &str = r"
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
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
