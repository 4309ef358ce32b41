//! The writer: events are rows, appended in the caller's transaction.
//!
//! [`enqueue`] takes the connection of an open transaction, so the state change and the event
//! that announces it commit together or not at all. On PostgreSQL it also issues `pg_notify`,
//! which the server delivers only at commit: a wake-up hint for the relay, never a source of
//! truth (a lost notification only costs the relay's poll interval). In one process, signal a
//! [`crate::Wakeup`] after the commit instead.

use chrono::{DateTime, Utc};
use common::{
    events::{Envelope, Event},
    trace::TraceContext,
};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbBackend, DbErr, EntityTrait, Statement};
use uuid::Uuid;

use crate::{NOTIFY_CHANNEL, entity};

/// Appends `event` to the outbox inside the caller's transaction, with `trace` as its headers,
/// and returns its event id (a UUIDv7).
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
    let row = entity::ActiveModel {
        id: Set(event_id),
        aggregate_id: Set(aggregate_id),
        event_type: Set(E::EVENT_TYPE.to_owned()),
        routing_key: Set(E::ROUTING_KEY.to_owned()),
        payload: Set(payload),
        headers: Set(trace.to_json()),
        created_at: Set(occurred_at),
        published_at: Set(None),
        attempts: Set(0),
        last_error: Set(None),
        ..Default::default()
    };
    entity::Entity::insert(row)
        .exec_without_returning(conn)
        .await?;
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, '')",
            [NOTIFY_CHANNEL.into()],
        ))
        .await?;
    }
    Ok(event_id)
}
