//! One public event → its `messages` row and one `webhook` delivery per subscribed endpoint,
//! in one transaction.
//!
//! The message's id is the sign-up event's id, so inserting it is the inbox check: a redelivered
//! event (or the same event consumed by two instances at once: the second insert waits for the
//! first transaction) finds the row and adds nothing. Endpoints are read in the same
//! transaction, so an event goes to the endpoints that were enabled and subscribed when it was
//! consumed; an endpoint created (or enabled) later does not receive it.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QuerySelect, TransactionTrait, TryInsertResult,
};
use uuid::Uuid;

use crate::{
    entity::{delivery, endpoint, message},
    public_events::PublicEvent,
    store::{self, NewDelivery},
};

/// What storing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// The message was new: stored with this many deliveries (one per subscribed endpoint).
    Fresh { deliveries: usize },
    /// The message was stored before (a redelivery): nothing was added.
    Duplicate,
}

/// Stores `event` as message `event_id` and fans it out to the enabled endpoints subscribed
/// to its type, each delivery bounded by `timeout` per attempt and due now. After `Fresh`
/// with deliveries, wake the engine ([`crate::store::DueSignal::wake`]).
///
/// # Errors
/// Any database error; nothing is stored then.
pub(crate) async fn store_message(
    db: &DatabaseConnection,
    event_id: Uuid,
    event: &PublicEvent,
    traceparent: Option<String>,
    timeout: Duration,
) -> Result<Stored, DbErr> {
    let txn = db.begin().await?;
    let stored = store_message_in(&txn, event_id, event, traceparent, timeout).await?;
    match stored {
        Stored::Duplicate => txn.rollback().await?,
        Stored::Fresh { .. } => txn.commit().await?,
    }
    Ok(stored)
}

/// [`store_message`] in the caller's transaction (the engine announces a disabled endpoint in
/// the transaction that disables it). On `Duplicate` nothing was written.
///
/// # Errors
/// Any database error.
pub(crate) async fn store_message_in(
    txn: &impl sea_orm::ConnectionTrait,
    event_id: Uuid,
    event: &PublicEvent,
    traceparent: Option<String>,
    timeout: Duration,
) -> Result<Stored, DbErr> {
    let now = Utc::now();
    let inserted = message::Entity::insert(message::ActiveModel {
        id: Set(event_id),
        event_type: Set(event.event_type.to_owned()),
        payload: Set(event.payload.clone()),
        traceparent: Set(traceparent.clone()),
        created_at: Set(now),
    })
    .on_conflict_do_nothing_on([message::Column::Id])
    .exec_without_returning(txn)
    .await?;
    if !matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
        return Ok(Stored::Duplicate);
    }
    let deliveries: Vec<NewDelivery> = subscribed_endpoints(txn, event.event_type)
        .await?
        .into_iter()
        .map(|(endpoint_id, url)| NewDelivery {
            id: Uuid::now_v7(),
            kind: delivery::kind::WEBHOOK,
            endpoint_id: Some(endpoint_id),
            message_id: Some(event_id),
            job_id: None,
            url,
            method: "POST".to_owned(),
            headers: Vec::new(),
            // The engine sends the message's payload.
            body: None,
            timeout,
            retry_schedule: None,
            fail_statuses: None,
            execute_at: now,
            deadline: None,
            traceparent: traceparent.clone(),
        })
        .collect();
    let count = deliveries.len();
    store::insert(txn, deliveries).await?;
    Ok(Stored::Fresh { deliveries: count })
}

/// Id and URL of every enabled endpoint whose `event_types` is unset (every type) or lists
/// `event_type`. Filtered here rather than in SQL: the JSON column differs between PostgreSQL
/// and SQLite, and endpoints are few.
async fn subscribed_endpoints(
    txn: &impl sea_orm::ConnectionTrait,
    event_type: &str,
) -> Result<Vec<(Uuid, String)>, DbErr> {
    let endpoints: Vec<(Uuid, String, Option<serde_json::Value>)> = endpoint::Entity::find()
        .select_only()
        .columns([
            endpoint::Column::Id,
            endpoint::Column::Url,
            endpoint::Column::EventTypes,
        ])
        .filter(endpoint::Column::Enabled.eq(true))
        .into_tuple()
        .all(txn)
        .await?;
    Ok(endpoints
        .into_iter()
        .filter(|(_, _, types)| subscribes(types.as_ref(), event_type))
        .map(|(id, url, _)| (id, url))
        .collect())
}

/// `None` (or JSON `null`): every sign-up type (an operational type such as
/// `endpoint.disabled` only when listed: a catch-all receiver, often a third party, must not
/// learn about the other endpoints); an array: the types listed.
fn subscribes(event_types: Option<&serde_json::Value>, event_type: &str) -> bool {
    match event_types {
        None | Some(serde_json::Value::Null) => {
            !crate::public_events::OPERATIONAL_TYPES.contains(&event_type)
        }
        Some(serde_json::Value::Array(types)) => types.iter().any(|t| t == event_type),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::subscribes;

    #[test]
    fn an_endpoint_without_types_gets_every_sign_up_type_and_one_with_types_only_those() {
        assert!(subscribes(None, "user.registered"));
        assert!(subscribes(Some(&json!(null)), "user.registered"));
        assert!(
            !subscribes(None, "endpoint.disabled"),
            "operational: listed only"
        );
        assert!(subscribes(
            Some(&json!(["endpoint.disabled"])),
            "endpoint.disabled"
        ));
        let types = json!(["user.registered", "user.verified"]);
        assert!(subscribes(Some(&types), "user.verified"));
        assert!(!subscribes(Some(&types), "user.verification_resent"));
        assert!(!subscribes(Some(&json!([])), "user.registered"));
        assert!(!subscribes(
            Some(&json!("user.registered")),
            "user.registered"
        ));
    }
}
