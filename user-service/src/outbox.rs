//! The outbox writer: events are rows, written in the caller's transaction.
//!
//! [`enqueue`] takes the connection of an open transaction, so the state change and the event that
//! announces it commit together or not at all. On PostgreSQL it also issues `pg_notify`, which
//! the server delivers only at commit: a wake-up hint for the relay, never a source of truth (a
//! lost notification only costs the relay's poll interval).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::{
    events::{Envelope, Event},
    topology::OUTBOX_NOTIFY_CHANNEL,
};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbBackend, DbErr, EntityTrait, Statement};
use serde_json::json;
use uuid::Uuid;

use crate::{entity::outbox, trace::TraceContext};

/// An in-process wake-up for a relay running in the same process (the all-in-one runner): on
/// SQLite there is no `NOTIFY`, so after each commit that wrote outbox rows the writer signals
/// this instead. Without a relay attached it does nothing; like `NOTIFY` it is only a hint.
#[derive(Debug, Clone, Default)]
pub struct OutboxWakeup(Option<Arc<tokio::sync::Notify>>);

impl OutboxWakeup {
    /// Signals `notify` after each outbox commit.
    pub fn new(notify: Arc<tokio::sync::Notify>) -> Self {
        Self(Some(notify))
    }

    /// Call after committing a transaction that enqueued events.
    pub fn committed(&self) {
        if let Some(notify) = &self.0 {
            notify.notify_one();
        }
    }
}

/// Appends `event` to the outbox inside the caller's transaction and returns its event id.
///
/// # Errors
/// Any database error; the caller's transaction must then be rolled back.
pub async fn enqueue<E: Event>(
    conn: &impl ConnectionTrait,
    occurred_at: DateTime<Utc>,
    event: E,
    trace: &TraceContext,
) -> Result<Uuid, DbErr> {
    let event_id = Uuid::now_v7();
    let aggregate_id = event.aggregate_id();
    let envelope = Envelope::new(event_id, occurred_at, event);
    let payload = serde_json::to_value(&envelope).map_err(|e| DbErr::Json(e.to_string()))?;
    let row = outbox::ActiveModel {
        id: Set(event_id),
        aggregate_id: Set(aggregate_id),
        event_type: Set(E::EVENT_TYPE.to_owned()),
        routing_key: Set(E::ROUTING_KEY.to_owned()),
        payload: Set(payload),
        headers: Set(json!({
            "correlation_id": trace.correlation_id,
            "traceparent": trace.traceparent,
        })),
        created_at: Set(occurred_at),
        published_at: Set(None),
        attempts: Set(0),
        last_error: Set(None),
        ..Default::default()
    };
    outbox::Entity::insert(row)
        .exec_without_returning(conn)
        .await?;
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, '')",
            [OUTBOX_NOTIFY_CHANNEL.into()],
        ))
        .await?;
    }
    Ok(event_id)
}
