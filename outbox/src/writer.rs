//! The writer: events are rows, appended in the caller's transaction.
//!
//! [`enqueue`] takes the connection of an open transaction, so the state change and the event
//! that announces it commit together or not at all. [`insert_with_event`] does the same for a
//! state change made of inserts, in one statement on PostgreSQL. On PostgreSQL the outbox INSERT
//! also calls `pg_notify` (in the same statement), which the server delivers only at commit: a
//! wake-up hint for the relay, never a source of truth (a lost notification only costs the
//! relay's poll interval). In one process, signal a [`crate::Wakeup`] after the commit instead.
//!
//! The event's [`Event::SECRET_FIELDS`] are blanked in a copy of the payload stored with the
//! row (`redacted_payload`), which replaces the payload when the row is marked published: the
//! relay publishes the secrets, the table keeps them only while the row is pending.

use chrono::{DateTime, Utc};
use common::{
    events::{Envelope, Event},
    trace::TraceContext,
};
use sea_orm::{
    ActiveValue::Set,
    ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryTrait, Statement, TransactionSession,
    TransactionTrait,
    prelude::Json,
    sea_query::{CommonTableExpression, Func, InsertStatement, Query, WithClause},
};
use uuid::Uuid;

use crate::{NOTIFY_CHANNEL, entity};

/// What a secret field holds once its row is published.
pub const REDACTED: &str = "<redacted>";

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
    let (event_id, row) = outbox_row(occurred_at, event, trace)?;
    let backend = conn.get_database_backend();
    let insert = entity::Entity::insert(row).build(backend);
    let statement = match backend {
        DbBackend::Postgres => with_notify(insert),
        _ => insert,
    };
    conn.execute_raw(statement).await?;
    Ok(event_id)
}

/// Inserts `changes` (the state change) and appends `event` to the outbox, all or nothing, in
/// as few round trips as the backend allows, and returns the event id.
///
/// On PostgreSQL this is one statement, atomic without BEGIN and COMMIT: each change is a
/// data-modifying CTE, then come the outbox row and the relay's wake-up, as [`enqueue`] writes
/// them. One round trip instead of a transaction's 2 + 1 per row. (The CTEs run in no set
/// order and see one snapshot, not each other's rows, which inserts need not; foreign keys are
/// checked at the statement's end, so a change may reference a row another change inserts.)
/// Elsewhere the changes run in order, then [`enqueue`], in a transaction.
///
/// # Errors
/// Any database error; nothing was written.
pub async fn insert_with_event<E: Event>(
    db: &(impl ConnectionTrait + TransactionTrait),
    changes: Vec<InsertStatement>,
    occurred_at: DateTime<Utc>,
    event: E,
    trace: &TraceContext,
) -> Result<Uuid, DbErr> {
    let backend = db.get_database_backend();
    if backend != DbBackend::Postgres {
        let txn = db.begin().await?;
        for change in &changes {
            txn.execute_raw(backend.build(change)).await?;
        }
        let event_id = enqueue(&txn, occurred_at, event, trace).await?;
        txn.commit().await?;
        return Ok(event_id);
    }
    let (event_id, row) = outbox_row(occurred_at, event, trace)?;
    let mut with = WithClause::new();
    for (i, change) in changes.into_iter().enumerate() {
        with.cte(
            CommonTableExpression::new()
                .query(change)
                .table_name(format!("change_{i}"))
                .to_owned(),
        );
    }
    let mut append = entity::Entity::insert(row).into_query();
    append.returning_col(entity::Column::Seq);
    with.cte(
        CommonTableExpression::new()
            .query(append)
            .table_name("appended")
            .to_owned(),
    );
    let notify = Query::select()
        .expr(Func::cust("pg_notify").arg(NOTIFY_CHANNEL).arg(""))
        .from("appended")
        .to_owned();
    db.execute_raw(backend.build(&notify.with(with))).await?;
    Ok(event_id)
}

/// The outbox row of `event` and its event id.
fn outbox_row<E: Event>(
    occurred_at: DateTime<Utc>,
    event: E,
    trace: &TraceContext,
) -> Result<(Uuid, entity::ActiveModel), DbErr> {
    let event_id = Uuid::now_v7();
    let aggregate_id = event.aggregate_id();
    let envelope = Envelope::new(event_id, occurred_at, event);
    let payload = serde_json::to_value(&envelope).map_err(|e| DbErr::Json(e.to_string()))?;
    let redacted_payload = redacted(&payload, E::EVENT_TYPE, E::SECRET_FIELDS)?;
    let row = entity::ActiveModel {
        id: Set(event_id),
        aggregate_id: Set(aggregate_id),
        event_type: Set(E::EVENT_TYPE.to_owned()),
        routing_key: Set(E::ROUTING_KEY.to_owned()),
        payload: Set(payload),
        redacted_payload: Set(redacted_payload),
        headers: Set(trace.to_json()),
        created_at: Set(occurred_at),
        published_at: Set(None),
        attempts: Set(0),
        last_error: Set(None),
        ..Default::default()
    };
    Ok((event_id, row))
}

/// The PostgreSQL `insert` with the relay's wake-up riding on it: one statement, one round trip,
/// instead of a second `SELECT pg_notify(…)`. A data-modifying CTE runs whatever the outer
/// query reads; selecting from it makes the notification depend on the inserted row. The server
/// delivers it at commit (none on rollback) and folds identical ones of one transaction into
/// one, so a transaction that enqueues several events still wakes the relay once.
fn with_notify(insert: Statement) -> Statement {
    let mut values = insert.values.map(|values| values.0).unwrap_or_default();
    values.push(NOTIFY_CHANNEL.into());
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!(
            "WITH appended AS ({} RETURNING 1) SELECT pg_notify(${}, '') FROM appended",
            insert.sql,
            values.len()
        ),
        values,
    )
}

/// `payload` (an envelope) with each of `secret_fields` (pointers into its `data`) replaced by
/// [`REDACTED`]; `None` when there is nothing to blank.
///
/// # Errors
/// A declared field the event does not have: its secret would stay readable, so the write fails
/// (`common`'s tests check every event's declaration).
fn redacted(
    payload: &Json,
    event_type: &str,
    secret_fields: &[&str],
) -> Result<Option<Json>, DbErr> {
    if secret_fields.is_empty() {
        return Ok(None);
    }
    let mut redacted = payload.clone();
    for field in secret_fields {
        let value = redacted
            .pointer_mut(&format!("/data{field}"))
            .ok_or_else(|| {
                DbErr::Custom(format!(
                    "{event_type} declares the secret field {field}, which it does not have"
                ))
            })?;
        *value = Json::String(REDACTED.to_owned());
    }
    Ok(Some(redacted))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_fields_are_blanked_in_the_copy_only() {
        let payload = json!({
            "event_id": "e1",
            "data": {"user_id": "u1", "verification": {"link": "https://x/?token=t", "code": "123456"}}
        });
        let fields = ["/verification/link", "/verification/code"];
        let copy = redacted(&payload, "T", &fields).unwrap().unwrap();
        assert_eq!(copy["data"]["verification"]["link"], REDACTED);
        assert_eq!(copy["data"]["verification"]["code"], REDACTED);
        assert_eq!(copy["data"]["user_id"], "u1");
        assert_eq!(copy["event_id"], "e1");
        assert_eq!(payload["data"]["verification"]["code"], "123456");
        assert_eq!(redacted(&payload, "T", &[]).unwrap(), None);
    }

    #[test]
    fn a_declared_field_that_is_missing_fails_the_write() {
        let error = redacted(&json!({"data": {}}), "T", &["/secret"]).unwrap_err();
        assert!(error.to_string().contains("/secret"), "{error}");
    }
}
