//! The relay itself: claim a batch, publish it with confirms, mark what was confirmed. The
//! loops that keep doing that are in [`pipeline`].
//!
//! Invariant: a row is marked published only after the broker acked it and did not return it,
//! in the transaction that claimed it (PostgreSQL). A crash anywhere before the commit leaves
//! the rows pending, so they are republished: zero loss, duplicates bounded by the in-flight
//! batches.

mod cursor;
mod pipeline;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64},
    },
    time::Duration,
};

use chrono::Utc;
use common::{
    amqp::{Broker, BrokerError},
    trace::headers,
};
use lapin::{Channel, options::ConfirmSelectOptions};
use outbox::{OutboxRow, Wakeup};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, TransactionTrait};
use tokio::{
    sync::{Mutex, Semaphore},
    time::Instant,
};

use self::cursor::ClaimCursor;
use crate::publish::{BatchOutcome, Outcome, publish_batch};

/// Why a batch could not run. Every variant is transient: back off and retry.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The `outbox` table does not exist yet: the user-service has not migrated its database.
    #[error("the outbox table does not exist yet (has the user-service migrated DATABASE_URL?)")]
    OutboxMissing,
    /// The database failed; nothing was marked.
    #[error("outbox database error")]
    Database(#[source] DbErr),
    /// The broker is unreachable; nothing was claimed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl RelayError {
    /// Metric label.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::OutboxMissing => "outbox_missing",
            Self::Database(_) => "database",
            Self::Broker(_) => "broker",
        }
    }

    /// A non-zero number per kind, for remembering the last one in an atomic.
    fn kind_code(&self) -> u8 {
        match self {
            Self::OutboxMissing => 1,
            Self::Database(_) => 2,
            Self::Broker(_) => 3,
        }
    }
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
    /// A published row's aggregate has a later pending row, eligible now ([`outbox::Marked`]).
    pub successors_pending: bool,
}

/// Tunables of the publishing loop.
#[derive(Debug, Clone)]
pub(crate) struct RelayConfig {
    /// Rows per batch.
    pub(crate) batch_size: u32,
    /// Unconfirmed publishes per process at most (`RELAY_MAX_IN_FLIGHT`).
    pub(crate) window: usize,
    /// Per-publish confirm timeout.
    pub(crate) confirm_timeout: Duration,
    /// Fallback poll interval.
    pub(crate) poll_interval: Duration,
    /// A pipeline busy with one batch for longer than this is stuck (liveness fails).
    pub(crate) stall_timeout: Duration,
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
    /// Why the last batch failed (a [`RelayError::kind_code`], 0 after a success): each outage
    /// cause is logged once, when it starts.
    failing: AtomicU8,
    /// When each pipeline started the batch it is working on (absent while it waits): a batch
    /// that never ends (a query or publish hung on a half-open connection, a table lock) shows
    /// here, and liveness fails on it.
    busy_since: std::sync::Mutex<HashMap<u64, Instant>>,
    next_pipeline: AtomicU64,
}

impl Relay {
    /// A relay over `db`'s outbox publishing through `broker`.
    pub(crate) fn new(
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
            failing: AtomicU8::new(0),
            busy_since: std::sync::Mutex::default(),
            next_pipeline: AtomicU64::new(0),
        }
    }

    /// How long the longest-running batch of a pipeline has been running, if one runs longer
    /// than `RELAY_STALL_TIMEOUT`: the relay is stuck and should be restarted (liveness).
    pub fn stalled_for(&self) -> Option<Duration> {
        let now = Instant::now();
        self.busy_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|since| now.saturating_duration_since(*since))
            .max()
            .filter(|busy| *busy > self.config.stall_timeout)
    }

    fn set_busy(&self, pipeline: u64, busy: bool) {
        let mut busy_since = self
            .busy_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if busy {
            busy_since.insert(pipeline, Instant::now());
        } else {
            busy_since.remove(&pipeline);
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
        self.relay_batch(&mut channel, None).await
    }

    /// One batch on the caller's channel slot (each pipeline owns one channel, so confirms and
    /// returns of concurrent batches never mix): claim → publish → mark. `pipeline` is the
    /// pipeline whose busy time this counts (liveness), if any.
    pub(crate) async fn relay_batch(
        &self,
        slot: &mut Option<Channel>,
        pipeline: Option<u64>,
    ) -> Result<BatchReport, RelayError> {
        let started = Instant::now();
        // The channel first: with the broker down nothing is claimed, no attempt is counted.
        let channel = match slot.take() {
            Some(channel) if channel.status().connected() => channel,
            _ => self.open_channel().await?,
        };
        let (claim_txn, rows) = self.claim().await?;
        if rows.is_empty() {
            if let Some(txn) = claim_txn {
                txn.commit().await?;
            }
            *slot = Some(channel);
            return Ok(BatchReport::default());
        }
        let outcome = self.publish(&channel, &rows, pipeline).await;
        let (confirmed, failures) = split(&rows, &outcome.outcomes);
        let marked = self.mark(claim_txn, &confirmed, &failures).await?;

        if outcome.channel_broken {
            self.broker.redeclare();
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
            successors_pending: marked.successors_pending,
        })
    }

    /// A confirm-mode channel on the process's connection (reconnecting first if it was lost).
    async fn open_channel(&self) -> Result<Channel, BrokerError> {
        let channel = self.broker.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(BrokerError::Channel)?;
        Ok(channel)
    }

    /// Claims a batch. PostgreSQL: in a transaction that holds the row locks until the mark
    /// commits, starting at the claim cursor. SQLite: a single relay, so the rows are read
    /// outside a transaction, leaving the one connection (and the write lock) free while the
    /// batch is in flight.
    async fn claim(&self) -> Result<(Option<DatabaseTransaction>, Vec<OutboxRow>), DbErr> {
        if self.db.get_database_backend() != DbBackend::Postgres {
            let rows = outbox::claim_batch(&self.db, self.config.batch_size, None).await?;
            return Ok((None, rows));
        }
        let txn = self.db.begin().await?;
        // Claims are serialised so that each one can start past the previous one.
        let mut cursor = self.cursor.lock().await;
        let after = cursor.start(Instant::now());
        let rows = outbox::claim_batch(&txn, self.config.batch_size, after).await?;
        cursor.claimed(&rows, self.config.batch_size, Instant::now());
        Ok((Some(txn), rows))
    }

    /// Publishes the batch once the shared in-flight window has room for it (a batch larger
    /// than the window publishes through a window of its own size).
    ///
    /// Waiting for the window is not counted as busy: with batches as large as the window, a
    /// healthy batch may queue behind every other pipeline's publishes.
    async fn publish(
        &self,
        channel: &Channel,
        rows: &[OutboxRow],
        pipeline: Option<u64>,
    ) -> BatchOutcome {
        let window = rows.len().min(self.config.window).max(1);
        if let Some(pipeline) = pipeline {
            self.set_busy(pipeline, false);
        }
        let _permits = self
            .in_flight
            .acquire_many(u32::try_from(window).unwrap_or(u32::MAX))
            .await
            .ok();
        if let Some(pipeline) = pipeline {
            self.set_busy(pipeline, true);
        }
        publish_batch(
            channel,
            &self.broker.topology().exchange,
            rows,
            window,
            self.config.confirm_timeout,
        )
        .await
    }

    /// Marks the confirmed rows published and counts an attempt on the failed ones, in the
    /// claiming transaction when there is one. A crash or error before the commit republishes
    /// the confirmed rows: duplicates, never loss.
    async fn mark(
        &self,
        claim_txn: Option<DatabaseTransaction>,
        confirmed: &[i64],
        failures: &BTreeMap<String, Vec<i64>>,
    ) -> Result<outbox::Marked, DbErr> {
        let confirmed_at = Utc::now();
        let txn = match claim_txn {
            Some(txn) => txn,
            None => self.db.begin().await?,
        };
        let marked = outbox::mark_published(&txn, confirmed, confirmed_at).await?;
        for (error, seqs) in failures {
            outbox::record_failure(&txn, seqs, error).await?;
        }
        txn.commit().await?;
        Ok(marked)
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
            correlation_id = text(headers::CORRELATION_ID),
            traceparent = text(headers::TRACEPARENT),
            "event published"
        );
    }
}
