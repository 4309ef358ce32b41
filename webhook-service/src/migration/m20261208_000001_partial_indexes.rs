//! `deliveries_job` and `deliveries_completed_at` become partial: only the rows that have a
//! job, and only the finished rows.
//!
//! Neither claim nor recording can update a delivery in place (both change indexed columns), so
//! each of them adds an entry to every index whose predicate the new row version matches. A
//! webhook delivery has no job, and a pending one no `completed_at`: the partial indexes skip
//! those entries (two of the six per claim, one per recording) and stay as useful for what reads
//! them (`job_id = $1`, `completed_at < $1`: both imply the column is not null, on PostgreSQL
//! and SQLite alike).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(super) struct Migration;

const UP: &str = r"
DROP INDEX deliveries_job;
CREATE INDEX deliveries_job ON deliveries (job_id) WHERE job_id IS NOT NULL;
DROP INDEX deliveries_completed_at;
CREATE INDEX deliveries_completed_at ON deliveries (completed_at) WHERE completed_at IS NOT NULL
";

const DOWN: &str = r"
DROP INDEX deliveries_job;
CREATE INDEX deliveries_job ON deliveries (job_id);
DROP INDEX deliveries_completed_at;
CREATE INDEX deliveries_completed_at ON deliveries (completed_at)
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
