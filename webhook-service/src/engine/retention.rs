//! Retention: attempts, finished deliveries, jobs and messages older than
//! `WEBHOOK_ATTEMPT_RETENTION` are deleted in bounded batches, so the tables stay small under
//! sustained load (and a job's request headers, credentials included, and its `notify_secret`
//! do not outlive it). A pending delivery is never deleted, nor a job or a message any delivery
//! still refers to (a failed delivery can be recovered until it is purged, and needs its
//! message). The settings keep the retention past the retry horizon, so the attempts of a
//! delivery still being retried stay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, Value};
use tokio_util::sync::CancellationToken;

use common::{backoff::Backoff, shutdown::sleep_or_cancel};

use super::metrics;

/// Rows per delete statement.
const BATCH: i64 = 1000;

/// The purges, in an order that never leaves a row pointing at a deleted one: attempts, then
/// deliveries, then the jobs and messages no delivery refers to (a job's delivery and its
/// `notify` delivery both gone). SQLite's.
const PURGES_SQLITE: &[&str] = &[
    "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts \
     WHERE started_at < $1 LIMIT $2)",
    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
     WHERE status <> 'pending' AND completed_at < $1 LIMIT $2)",
    "DELETE FROM jobs WHERE id IN (SELECT j.id FROM jobs j \
     WHERE j.created_at < $1 \
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = j.id) LIMIT $2)",
    "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m \
     WHERE m.created_at < $1 \
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id) LIMIT $2)",
];

/// The same on PostgreSQL, written for the generic plans cached on small tables (a new
/// deployment's, kept until the next ANALYZE): those scanned attempts, deliveries and messages
/// whole at every purge, even with nothing to purge. A redundant lower bound (`>=
/// '-infinity'`) keeps each time test on its index; `OFFSET 0` keeps the messages' `NOT EXISTS`
/// a probe per old message (the cached anti-join scanned deliveries for each). (SQLite keeps
/// [`PURGES_SQLITE`]: it rejects a bare `OFFSET`.)
const PURGES_POSTGRES: &[&str] = &[
    "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts \
     WHERE started_at < $1 AND started_at >= '-infinity' LIMIT $2)",
    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
     WHERE status <> 'pending' AND completed_at < $1 AND completed_at >= '-infinity' LIMIT $2)",
    "DELETE FROM jobs WHERE id IN (SELECT j.id FROM jobs j \
     WHERE j.created_at < $1 \
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = j.id) LIMIT $2)",
    "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m \
     WHERE m.created_at < $1 AND m.created_at >= '-infinity' \
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id OFFSET 0) \
     LIMIT $2)",
];

/// Purges every `min(retention / 10, 60 s)` (at least 1 s) until `shutdown`.
pub(super) async fn run(db: DatabaseConnection, retention: Duration, shutdown: CancellationToken) {
    let interval = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut backoff = Backoff::default();
    loop {
        let pause = match purge(&db, common::database::retention_cutoff(retention)).await {
            Ok(deleted) => {
                backoff.reset();
                if deleted > 0 {
                    tracing::debug!(
                        deleted,
                        "purged old attempts, deliveries, jobs and messages"
                    );
                    metrics::purged(deleted);
                }
                interval
            }
            Err(error) => {
                tracing::warn!(
                    error = %common::telemetry::error_chain(&error),
                    "webhook retention failed; retrying"
                );
                backoff.next_delay().max(interval)
            }
        };
        if !sleep_or_cancel(pause, &shutdown).await {
            return;
        }
    }
}

/// Deletes what is older than `cutoff`, [`BATCH`] rows per statement until a short batch;
/// returns how many rows were deleted.
///
/// # Errors
/// Any database error (rows deleted before it stay deleted).
pub(super) async fn purge(
    conn: &impl ConnectionTrait,
    cutoff: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let backend = conn.get_database_backend();
    let purges = match backend {
        DbBackend::Postgres => PURGES_POSTGRES,
        _ => PURGES_SQLITE,
    };
    let mut total = 0;
    for &sql in purges {
        loop {
            let deleted = conn
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    sql,
                    [Value::from(cutoff), Value::from(BATCH)],
                ))
                .await?
                .rows_affected();
            total += deleted;
            if deleted < BATCH.unsigned_abs() {
                break;
            }
        }
    }
    Ok(total)
}
