//! Retention: published rows are deleted once older than `RELAY_RETENTION`, in bounded batches,
//! so the outbox stays small under sustained load. Pending rows are never deleted.

use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::{
    outbox,
    relay::{Backoff, sleep_or_cancel},
};

/// Deletes published rows older than `retention`, `batch` rows per statement, until a short
/// batch shows none are left; returns how many were deleted.
///
/// # Errors
/// Any database error (rows deleted before it stay deleted).
pub async fn purge_published(
    db: &DatabaseConnection,
    retention: Duration,
    batch: u32,
) -> Result<u64, sea_orm::DbErr> {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let cutoff = chrono::Utc::now()
        .checked_sub_signed(retention)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let mut total = 0;
    loop {
        let deleted = outbox::delete_published_before(db, cutoff, batch).await?;
        total += deleted;
        if deleted < u64::from(batch) {
            return Ok(total);
        }
    }
}

/// Runs [`purge_published`] every `min(retention / 10, 60 s)` (at least 1 s) until `shutdown`.
pub async fn run(
    db: DatabaseConnection,
    retention: Duration,
    batch: u32,
    shutdown: CancellationToken,
) {
    let interval = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut backoff = Backoff::default();
    loop {
        let pause = match purge_published(&db, retention, batch).await {
            Ok(deleted) => {
                backoff.reset();
                if deleted > 0 {
                    tracing::debug!(deleted, "purged published outbox rows");
                    metrics::counter!("outbox_relay_purged_total").increment(deleted);
                }
                interval
            }
            Err(error) => {
                if !outbox::is_missing_table(&error) {
                    tracing::warn!(%error, "outbox retention failed; retrying");
                }
                backoff.next().max(interval)
            }
        };
        if !sleep_or_cancel(pause, &shutdown).await {
            return;
        }
    }
}
