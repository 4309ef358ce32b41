//! The relay itself: claim a batch, publish it with confirms, mark what was confirmed — and the
//! loops that keep doing that until shutdown.
//!
//! Invariant: a row is marked published only after the broker acked it and did not return it,
//! in the transaction that claimed it (PostgreSQL). A crash anywhere before the commit leaves
//! the rows pending, so they are republished: zero loss, duplicates bounded by the in-flight
//! batches.

use std::{
    collections::BTreeMap,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use lapin::Channel;
use sea_orm::{DatabaseConnection, DbBackend, DbErr, TransactionTrait};
use tokio::{
    sync::{Mutex, Semaphore},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use common::{backoff::Backoff, shutdown::sleep_or_cancel};
use outbox::{OutboxRow, Wakeup};

use crate::broker::{Broker, BrokerError, Outcome, publish_batch};

/// Why a batch could not run. Every variant is transient: back off and retry.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The `outbox` table does not exist yet: the user-service has not migrated its database.
    #[error("the outbox table does not exist yet (has the user-service migrated DATABASE_URL?)")]
    OutboxMissing,
    /// The database failed; nothing was marked.
    #[error("outbox database error: {0}")]
    Database(#[source] DbErr),
    /// The broker is unreachable; nothing was claimed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl From<DbErr> for RelayError {
    fn from(error: DbErr) -> Self {
        if outbox::is_missing_table(&error) {
            Self::OutboxMissing
        } else {
            Self::Database(error)
        }
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows confirmed and marked published.
    pub published: usize,
    /// Rows left pending (nack, returned, timeout, channel error), with `attempts` increased.
    pub failed: usize,
}

/// Tunables of the publishing loop.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows per batch.
    pub batch_size: u32,
    /// Unconfirmed publishes per batch at most.
    pub window: usize,
    /// Per-publish confirm timeout.
    pub confirm_timeout: Duration,
    /// Fallback poll interval.
    pub poll_interval: Duration,
}

/// Moves outbox rows to the broker. Cheap to share (`Arc`); see [`Relay::relay_once`].
pub struct Relay {
    db: DatabaseConnection,
    broker: Arc<Broker>,
    config: RelayConfig,
    wakeup: Wakeup,
    channel: Mutex<Option<Channel>>,
    cursor: Mutex<ClaimCursor>,
    /// One permit per unconfirmed publish allowed (`RELAY_MAX_IN_FLIGHT`), shared by all
    /// pipelines: a batch publishes only once it holds a permit for each row it sends.
    in_flight: Semaphore,
    warned_missing_table: AtomicBool,
}

/// How long a claim cursor is followed before claims start from the beginning again: the bound
/// on the extra wait of a row the cursor passed while it was not yet eligible (an aggregate's
/// next event, a row another relay abandoned) during a sustained backlog.
const CURSOR_REWIND: Duration = Duration::from_millis(250);

/// Where this relay's next PostgreSQL claim starts (the `after` hint of
/// [`outbox::claim_batch`]): past the last full batch it claimed, so concurrent pipelines do
/// not walk over each other's locked rows. Back at the beginning after a short batch (the
/// backlog is drained), after a failure (its rows are pending again) and every
/// [`CURSOR_REWIND`].
#[derive(Debug, Default)]
struct ClaimCursor {
    after: Option<i64>,
    since: Option<Instant>,
}

impl ClaimCursor {
    /// Where a claim made at `now` starts.
    fn start(&mut self, now: Instant) -> Option<i64> {
        if self
            .since
            .is_some_and(|since| now.saturating_duration_since(since) >= CURSOR_REWIND)
        {
            self.rewind();
        }
        self.after
    }

    /// Records a claim made at `now` that returned `rows`.
    fn claimed(&mut self, rows: &[OutboxRow], batch_size: u32, now: Instant) {
        match rows.last() {
            Some(last) if rows.len() >= usize::try_from(batch_size).unwrap_or(usize::MAX) => {
                self.after = Some(last.seq);
                self.since.get_or_insert(now);
            }
            _ => self.rewind(),
        }
    }

    fn rewind(&mut self) {
        self.after = None;
        self.since = None;
    }
}

impl Relay {
    /// A relay over `db`'s outbox publishing through `broker`.
    pub fn new(
        db: DatabaseConnection,
        broker: Arc<Broker>,
        config: RelayConfig,
        wakeup: Wakeup,
    ) -> Self {
        Self {
            in_flight: Semaphore::new(config.window.clamp(1, Semaphore::MAX_PERMITS)),
            db,
            broker,
            config,
            wakeup,
            channel: Mutex::new(None),
            cursor: Mutex::new(ClaimCursor::default()),
            warned_missing_table: AtomicBool::new(false),
        }
    }

    /// The outbox database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The broker connection.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Claims, publishes and marks one batch (deterministic; tests call it until it returns
    /// nothing claimed).
    ///
    /// # Errors
    /// [`RelayError`] when the database or broker is unavailable; claimed rows then stay pending.
    pub async fn relay_once(&self) -> Result<BatchReport, RelayError> {
        let mut channel = self.channel.lock().await;
        self.relay_batch(&mut channel).await
    }

    /// One batch on the caller's channel slot (each pipeline owns one channel, so confirms and
    /// returns of concurrent batches never mix).
    async fn relay_batch(&self, slot: &mut Option<Channel>) -> Result<BatchReport, RelayError> {
        let started = Instant::now();
        // The channel first: with the broker down nothing is claimed, no attempt is counted.
        let channel = match slot.take() {
            Some(channel) if channel.status().connected() => channel,
            _ => self.broker.open_channel().await?,
        };
        let postgres = self.db.get_database_backend() == DbBackend::Postgres;
        // PostgreSQL: the claiming transaction holds the row locks until the mark commits.
        // SQLite: a single relay, so the rows are read outside a transaction, leaving the one
        // connection (and the write lock) free while the batch is in flight.
        let claim_txn = if postgres {
            Some(self.db.begin().await?)
        } else {
            None
        };
        let rows = match &claim_txn {
            Some(txn) => {
                // Claims are serialised so that each one can start past the previous one.
                let mut cursor = self.cursor.lock().await;
                let after = cursor.start(Instant::now());
                let rows = outbox::claim_batch(txn, self.config.batch_size, after).await?;
                cursor.claimed(&rows, self.config.batch_size, Instant::now());
                rows
            }
            None => outbox::claim_batch(&self.db, self.config.batch_size, None).await?,
        };
        if rows.is_empty() {
            if let Some(txn) = claim_txn {
                txn.commit().await?;
            }
            *slot = Some(channel);
            return Ok(BatchReport::default());
        }

        // A batch larger than the window publishes through a window of its own size.
        let window = rows.len().min(self.config.window).max(1);
        let permits = self
            .in_flight
            .acquire_many(u32::try_from(window).unwrap_or(u32::MAX))
            .await
            .ok();
        let outcome = publish_batch(
            &channel,
            &self.broker.topology().exchange,
            &rows,
            window,
            self.config.confirm_timeout,
        )
        .await;
        drop(permits);
        let confirmed_at = Utc::now();
        let (confirmed, failures) = split(&rows, &outcome.outcomes);

        let txn = match claim_txn {
            Some(txn) => txn,
            None => self.db.begin().await?,
        };
        outbox::mark_published(&txn, &confirmed, confirmed_at).await?;
        for (error, seqs) in &failures {
            outbox::record_failure(&txn, seqs, error).await?;
        }
        // A crash or error before this commit republishes the confirmed rows: duplicates, never
        // loss.
        txn.commit().await?;

        if outcome.channel_broken {
            self.broker.redeclare_topology();
            let _ = channel
                .close(200, "abandoning channel after failure".into())
                .await;
        } else {
            *slot = Some(channel);
        }
        let failed = rows.len() - confirmed.len();
        record_metrics(&outcome.outcomes, confirmed.len(), started);
        log_published(&rows, &confirmed);
        if failed > 0 {
            // Those rows are pending again, behind the cursor.
            self.cursor.lock().await.rewind();
            let first = failures.keys().next().map_or("", String::as_str);
            tracing::warn!(
                claimed = rows.len(),
                failed,
                error = first,
                "rows left pending"
            );
        }
        tracing::debug!(
            claimed = rows.len(),
            published = confirmed.len(),
            "batch relayed"
        );
        Ok(BatchReport {
            claimed: rows.len(),
            published: confirmed.len(),
            failed,
        })
    }

    /// Runs one batch pipeline until `shutdown`: drains while batches come back non-empty, then
    /// waits for a wake-up or the poll interval. On shutdown the in-flight batch gets up to the
    /// confirm timeout to finish; after that it is dropped and its rows stay pending.
    pub async fn run_pipeline(&self, shutdown: CancellationToken) {
        let mut slot: Option<Channel> = None;
        let mut backoff = Backoff::default();
        'outer: loop {
            // Drain. A wake-up arriving meanwhile is kept by `Wakeup` for the next idle wait.
            loop {
                if shutdown.is_cancelled() {
                    break 'outer;
                }
                let result = {
                    let mut batch = pin!(self.relay_batch(&mut slot));
                    tokio::select! {
                        result = &mut batch => Some(result),
                        () = shutdown.cancelled() => {
                            tokio::time::timeout(self.config.confirm_timeout, &mut batch).await.ok()
                        }
                    }
                };
                match result {
                    None => {
                        tracing::warn!(
                            "shutdown: in-flight batch abandoned, its rows stay pending"
                        );
                        break 'outer;
                    }
                    // Progress (or nothing to do): keep draining. A batch with some failed rows
                    // but others published goes on too, so one unroutable row does not throttle
                    // everyone else.
                    Some(Ok(report)) if report.failed == 0 || report.published > 0 => {
                        backoff.reset();
                        self.warned_missing_table.store(false, Ordering::Relaxed);
                        if report.claimed == 0 {
                            break;
                        }
                        if report.claimed >= self.config.batch_size as usize {
                            // More may be waiting: recruit another idle pipeline.
                            self.wakeup.wake();
                        }
                    }
                    Some(Ok(_)) => {
                        // Nothing but nacks, returns, timeouts or a channel failure: back off.
                        if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
                            break 'outer;
                        }
                    }
                    Some(Err(error)) => {
                        // Whatever it had claimed is pending again.
                        self.cursor.lock().await.rewind();
                        self.log_error(&error);
                        if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
                            break 'outer;
                        }
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        if let Some(channel) = slot {
            let _ = channel.close(200, "shutting down".into()).await;
        }
    }

    fn log_error(&self, error: &RelayError) {
        let kind = match error {
            RelayError::OutboxMissing => "outbox_missing",
            RelayError::Database(_) => "database",
            RelayError::Broker(_) => "broker",
        };
        metrics::counter!("outbox_relay_errors_total", "kind" => kind).increment(1);
        match error {
            RelayError::OutboxMissing => {
                if !self.warned_missing_table.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "{error}; retrying with backoff. Start the user-service once to migrate it."
                    );
                }
            }
            other => tracing::warn!(error = %other, "relay batch failed; retrying with backoff"),
        }
    }
}

/// Sequences of confirmed rows, and failed rows grouped by their error text.
fn split(rows: &[OutboxRow], outcomes: &[Outcome]) -> (Vec<i64>, BTreeMap<String, Vec<i64>>) {
    let mut confirmed = Vec::with_capacity(rows.len());
    let mut failures: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (row, outcome) in rows.iter().zip(outcomes) {
        match outcome {
            Outcome::Confirmed => confirmed.push(row.seq),
            Outcome::Failed(_, error) => failures.entry(error.clone()).or_default().push(row.seq),
        }
    }
    (confirmed, failures)
}

fn record_metrics(outcomes: &[Outcome], published: usize, started: Instant) {
    metrics::counter!("outbox_relay_published_total").increment(published as u64);
    metrics::histogram!("outbox_relay_batch_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    for outcome in outcomes {
        if let Outcome::Failed(kind, _) = outcome {
            metrics::counter!("outbox_relay_publish_failures_total", "reason" => kind.as_str())
                .increment(1);
        }
    }
}

/// One debug line per published event, with its correlation id, so `grep <correlation id>`
/// over the logs shows the relay's part of one sign-up. Headers are parsed only when debug
/// logging is on: this is the hot path.
fn log_published(rows: &[OutboxRow], confirmed: &[i64]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for row in rows.iter().filter(|row| confirmed.contains(&row.seq)) {
        let headers: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&row.headers).unwrap_or_default();
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        };
        tracing::debug!(
            event_id = %row.id,
            event_type = %row.event_type,
            routing_key = %row.routing_key,
            correlation_id = text("correlation_id"),
            traceparent = text("traceparent"),
            "event published"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(seqs: std::ops::RangeInclusive<i64>) -> Vec<OutboxRow> {
        seqs.map(|seq| OutboxRow {
            seq,
            id: uuid::Uuid::new_v4(),
            aggregate_id: uuid::Uuid::new_v4(),
            event_type: "user.verified.v1".into(),
            routing_key: "user.verified.v1".into(),
            payload: "{}".into(),
            headers: "{}".into(),
            created_at: Utc::now(),
            attempts: 0,
        })
        .collect()
    }

    #[test]
    fn the_claim_cursor_follows_full_batches_and_rewinds() {
        let t0 = Instant::now();
        let mut cursor = ClaimCursor::default();
        assert_eq!(
            cursor.start(t0),
            None,
            "the first claim starts at the beginning"
        );
        cursor.claimed(&rows(1..=3), 3, t0);
        assert_eq!(cursor.start(t0), Some(3), "a full batch: start past it");
        cursor.claimed(&rows(4..=6), 3, t0 + Duration::from_millis(100));
        assert_eq!(cursor.start(t0 + Duration::from_millis(200)), Some(6));
        assert_eq!(
            cursor.start(t0 + CURSOR_REWIND),
            None,
            "rewound CURSOR_REWIND after it first moved, however full the batches"
        );
        cursor.claimed(&rows(7..=9), 3, t0 + CURSOR_REWIND);
        assert_eq!(cursor.start(t0 + CURSOR_REWIND), Some(9));
        cursor.claimed(&rows(10..=11), 3, t0 + CURSOR_REWIND);
        assert_eq!(
            cursor.start(t0 + CURSOR_REWIND),
            None,
            "a short batch: caught up"
        );
        cursor.claimed(&rows(1..=3), 3, t0 + CURSOR_REWIND);
        cursor.rewind();
        assert_eq!(cursor.start(t0 + CURSOR_REWIND), None, "a failure rewinds");
    }
}
