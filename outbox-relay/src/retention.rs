//! Retention: published rows are deleted once older than `RELAY_RETENTION`, in bounded batches,
//! so the outbox stays small under sustained load. Pending rows are never deleted.

use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use common::{backoff::Backoff, shutdown::sleep_or_cancel};

/// Runs [`outbox::purge_published`] every `min(retention / 10, 60 s)` (at least 1 s) until `shutdown`.
pub(crate) async fn run(
    db: DatabaseConnection,
    retention: Duration,
    batch: u32,
    shutdown: CancellationToken,
) {
    let interval = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut backoff = Backoff::default();
    loop {
        let pause = match outbox::purge_published(&db, retention, batch).await {
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
                backoff.next_delay().max(interval)
            }
        };
        if !sleep_or_cancel(pause, &shutdown).await {
            return;
        }
    }
}
