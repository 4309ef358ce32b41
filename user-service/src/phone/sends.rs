//! `phone_sends`: recording send requests and the velocity limits that count them.
//!
//! Counting and inserting happen under one lock per database, so concurrent requests cannot
//! all see room for one more: `pg_advisory_xact_lock` on PostgreSQL (held until the
//! transaction ends; SMS sends are few, so serialising them costs nothing), while SQLite runs
//! one writer at a time anyway. Every transaction that sends takes this lock first, before any
//! row lock, so lock order is the same everywhere.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, sea_query::Expr,
};
use uuid::Uuid;

use super::{Phone, SendBlock};
use crate::{entity::phone_send, rate_limit::ClientAddress, settings::Settings};

#[cfg(test)]
mod tests;

/// The advisory lock key of phone sends (an arbitrary constant: "phone" in ASCII).
const SEND_LOCK_KEY: i64 = 0x70_68_6f_6e_65;

/// The velocity window.
const WINDOW: chrono::Duration = chrono::Duration::hours(1);

/// Takes the send lock for the rest of the caller's transaction (PostgreSQL; no-op on SQLite).
///
/// # Errors
/// Database errors.
pub(crate) async fn lock(conn: &impl ConnectionTrait) -> Result<(), DbErr> {
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [SEND_LOCK_KEY.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Rows the velocity limits count: sent, or answered 202 without sending.
fn counted() -> Condition {
    let quiet: Vec<&str> = SendBlock::ALL
        .into_iter()
        .filter(|block| block.counts_for_velocity())
        .map(SendBlock::label)
        .collect();
    Condition::any()
        .add(phone_send::Column::BlockedReason.is_null())
        .add(phone_send::Column::BlockedReason.is_in(quiet))
}

/// The first velocity limit a new send request for `phone` from `client` would exceed, with
/// the seconds until it would not. Call it holding [`lock`].
///
/// # Errors
/// Database errors.
pub(crate) async fn velocity_block(
    conn: &impl ConnectionTrait,
    phone: &Phone,
    client: ClientAddress,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Result<Option<(SendBlock, u64)>, DbErr> {
    let since = now - WINDOW;
    let prefix = phone.prefix(settings.phone_prefix_strip_digits);
    let ip = client.to_string();
    let limits = [
        (
            SendBlock::VelocityNumber,
            Some(phone_send::Column::Phone.eq(phone.e164())),
            settings.phone_sends_per_number_per_hour,
        ),
        (
            SendBlock::VelocityPrefix,
            Some(phone_send::Column::Prefix.eq(prefix.as_str())),
            settings.phone_sends_per_prefix_per_hour,
        ),
        (
            SendBlock::VelocityIp,
            Some(phone_send::Column::ClientIp.eq(ip.as_str())),
            settings.phone_sends_per_ip_per_hour,
        ),
        (
            SendBlock::VelocityGlobal,
            None,
            settings.phone_sends_global_per_hour,
        ),
    ];
    for (block, key, limit) in limits {
        let mut condition = Condition::all()
            .add(phone_send::Column::CreatedAt.gt(since))
            .add(counted());
        if let Some(key) = key {
            condition = condition.add(key);
        } else {
            // Always true, but it bounds the range: the generic plan PostgreSQL caches for the
            // prepared statement while `phone_sends` is new and small otherwise seq-scans every
            // send (2.7 ms at 20,000) under the global lock, until an ANALYZE, instead of
            // walking `phone_sends_by_time` back from now. (SQLite compares the ISO text: every
            // timestamp sorts before it.)
            condition = condition.add(Expr::cust("created_at <= 'infinity'"));
        }
        // The limit-th newest counted row: while it is inside the window, the limit is reached,
        // and it leaves the window (making room) first.
        let oldest_in_limit = phone_send::Entity::find()
            .filter(condition)
            .order_by_desc(phone_send::Column::CreatedAt)
            .offset(u64::from(limit.saturating_sub(1)))
            .one(conn)
            .await?;
        if let Some(row) = oldest_in_limit {
            let wait = (row.created_at + WINDOW - now).num_seconds().max(1);
            return Ok(Some((block, u64::try_from(wait).unwrap_or(1))));
        }
    }
    Ok(None)
}

/// One send request, as recorded.
pub(crate) struct SendRecord<'a> {
    pub(crate) phone: &'a Phone,
    pub(crate) client: ClientAddress,
    pub(crate) now: DateTime<Utc>,
    /// The verification whose code was (or would have been) sent.
    pub(crate) verification_id: Option<Uuid>,
    /// Set when an SMS was sent.
    pub(crate) send_number: Option<u32>,
    /// Set when nothing was sent.
    pub(crate) blocked: Option<SendBlock>,
}

/// Inserts the request's `phone_sends` row and counts it in the metrics.
///
/// # Errors
/// Database errors.
pub(crate) async fn record(
    conn: &impl ConnectionTrait,
    record: SendRecord<'_>,
    settings: &Settings,
) -> Result<(), DbErr> {
    phone_send::Entity::insert(phone_send::ActiveModel {
        id: Set(Uuid::now_v7()),
        verification_id: Set(record.verification_id),
        phone: Set(record.phone.e164().to_owned()),
        prefix: Set(record.phone.prefix(settings.phone_prefix_strip_digits)),
        client_ip: Set(record.client.to_string()),
        created_at: Set(record.now),
        send_number: Set(record
            .send_number
            .map(|n| i32::try_from(n).unwrap_or(i32::MAX))),
        blocked_reason: Set(record.blocked.map(|block| block.label().to_owned())),
    })
    .exec_without_returning(conn)
    .await?;
    match record.blocked {
        Some(block) => {
            metrics::counter!("phone_sms_blocked_total", "reason" => block.label()).increment(1);
            tracing::info!(
                phone = %record.phone.masked(),
                client = %record.client,
                reason = block.label(),
                "SMS not sent"
            );
        }
        None => metrics::counter!("phone_sms_sends_total").increment(1),
    }
    Ok(())
}
