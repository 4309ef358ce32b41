//! Inserting deliveries: the one function every producer (fan-out, jobs, notify reports, SMS)
//! uses, so a delivery is born the same way everywhere; and the due signal that wakes the
//! engine after a commit.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbBackend, DbErr, EntityTrait, Statement};
use serde_json::json;
use tokio::sync::{Notify, futures::Notified};
use uuid::Uuid;

use crate::entity::delivery;

/// PostgreSQL `NOTIFY` channel signalled by every transaction that inserted deliveries, so the
/// engines of other instances wake up at once.
pub(crate) const NOTIFY_CHANNEL: &str = "webhook_due";

/// Rows per `INSERT` statement (a fan-out to thousands of endpoints is several statements).
const INSERT_CHUNK: usize = 500;

/// A delivery to insert.
#[derive(Clone)]
pub(crate) struct NewDelivery {
    pub(crate) id: Uuid,
    /// One of [`delivery::kind`].
    pub(crate) kind: &'static str,
    pub(crate) endpoint_id: Option<Uuid>,
    pub(crate) message_id: Option<Uuid>,
    pub(crate) job_id: Option<Uuid>,
    pub(crate) url: String,
    pub(crate) method: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<String>,
    pub(crate) timeout: Duration,
    /// `None`: the global `WEBHOOK_RETRY_SCHEDULE`.
    pub(crate) retry_schedule: Option<Vec<Duration>>,
    /// `None`: the global `WEBHOOK_FAIL_STATUSES`.
    pub(crate) fail_statuses: Option<Vec<u16>>,
    /// First attempt (a job's `execute_at`; now for the others).
    pub(crate) execute_at: DateTime<Utc>,
    pub(crate) deadline: Option<DateTime<Utc>>,
    pub(crate) traceparent: Option<String>,
}

impl std::fmt::Debug for NewDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewDelivery")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("execute_at", &self.execute_at)
            .finish_non_exhaustive()
    }
}

impl NewDelivery {
    fn into_active_model(self, now: DateTime<Utc>) -> delivery::ActiveModel {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        delivery::ActiveModel {
            id: Set(self.id),
            kind: Set(self.kind.to_owned()),
            endpoint_id: Set(self.endpoint_id),
            message_id: Set(self.message_id),
            job_id: Set(self.job_id),
            url: Set(self.url),
            method: Set(self.method),
            headers: Set(json!(self.headers)),
            body: Set(self.body),
            timeout_ms: Set(millis(self.timeout)),
            retry_schedule: Set(self
                .retry_schedule
                .map(|s| json!(s.into_iter().map(millis).collect::<Vec<_>>()))),
            fail_statuses: Set(self.fail_statuses.map(|s| json!(s))),
            status: Set(delivery::status::PENDING.to_owned()),
            attempts: Set(0),
            next_attempt_at: Set(self.execute_at),
            leased_until: Set(None),
            deadline: Set(self.deadline),
            last_status: Set(None),
            last_error: Set(None),
            traceparent: Set(self.traceparent),
            created_at: Set(now),
            updated_at: Set(now),
            completed_at: Set(None),
        }
    }
}

/// Inserts deliveries in the caller's transaction and, on PostgreSQL, queues a `NOTIFY` that
/// fires at its commit. After the commit, call [`DueSignal::wake`] for this process's engine.
///
/// # Errors
/// Any database error.
pub(crate) async fn insert(
    conn: &impl ConnectionTrait,
    deliveries: Vec<NewDelivery>,
) -> Result<(), DbErr> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let mut rows = deliveries.into_iter().map(|d| d.into_active_model(now));
    // In statements of at most INSERT_CHUNK rows: one statement binds 22 values a row, and
    // PostgreSQL (65,535) and SQLite (32,766) cap the values of one statement.
    loop {
        let chunk: Vec<_> = rows.by_ref().take(INSERT_CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        delivery::Entity::insert_many(chunk)
            .exec_without_returning(conn)
            .await?;
    }
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT pg_notify('{NOTIFY_CHANNEL}', '')"),
        ))
        .await?;
    }
    Ok(())
}

/// Inserts one delivery unless a delivery with its id exists (the inbox of a delivery whose id
/// is an event's id), with the `NOTIFY` of [`insert`], in one transaction. Returns whether it
/// was inserted. On PostgreSQL a concurrent insert of the same id waits for the first one's
/// transaction, then inserts nothing.
///
/// # Errors
/// Any database error; nothing is inserted then.
pub(crate) async fn insert_unless_exists(
    db: &sea_orm::DatabaseConnection,
    delivery: NewDelivery,
) -> Result<bool, DbErr> {
    use sea_orm::TransactionTrait as _;
    let txn = db.begin().await?;
    let inserted = delivery::Entity::insert(delivery.into_active_model(Utc::now()))
        .on_conflict_do_nothing_on([delivery::Column::Id])
        .exec_without_returning(&txn)
        .await?;
    if !matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0) {
        txn.rollback().await?;
        return Ok(false);
    }
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT pg_notify('{NOTIFY_CHANNEL}', '')"),
        ))
        .await?;
    }
    txn.commit().await?;
    Ok(true)
}

/// In-process hint that deliveries were committed (or became due sooner): wakes the engine so it
/// recomputes its next due time. Like `NOTIFY` it is only a hint; the engine also wakes at the
/// earliest `next_attempt_at` it knows and polls as a backstop.
#[derive(Debug, Clone, Default)]
pub(crate) struct DueSignal {
    notify: Arc<Notify>,
}

impl DueSignal {
    /// Wakes the engine (or its next wait).
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }

    /// Resolves at the next [`wake`](Self::wake).
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}
