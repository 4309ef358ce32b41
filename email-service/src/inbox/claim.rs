//! Claiming an event for a send, and the daily cap's decision in the same transaction.
//!
//! A first sight costs one statement without a cap, and one transaction of one statement (plus
//! the address's lock on PostgreSQL) with one: the row is inserted already admitted (`sending`,
//! tagged with the recipient key) or `suppressed`. Only a row that exists (a retry, a
//! redelivery, a crashed claimer) takes the longer way: read, compare-and-set, count.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, TransactionTrait};
use uuid::Uuid;

use super::{SendState, find_inbox_entry, statement};

#[cfg(test)]
mod tests;

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// First sight of this event: the caller owns the send.
    Fresh,
    /// A failed attempt is retried (retry queue or replay): the caller owns the send.
    Retry,
    /// The row was `sending`, and nobody is sending it now: a previous attempt died mid-send.
    /// The caller owns the send; the mail may already have gone out once.
    Resumed,
    /// Already sent: ack without sending.
    AlreadySent,
    /// Kept back by the daily cap before: ack without sending.
    AlreadySuppressed,
    /// The daily cap keeps it back now (the row is `suppressed`): ack without sending.
    Suppressed,
    /// Another instance claimed it less than the lease ago; look again after `remaining`.
    InFlightElsewhere {
        /// Time until the other claim counts as stale.
        remaining: Duration,
    },
}

/// The daily cap a claim decides under ([`crate::cap`]).
#[derive(Debug, Clone)]
pub(crate) struct CapCheck {
    /// The recipient's key ([`crate::cap::recipient_key`]).
    pub(crate) recipient_key: String,
    /// Admitted mails per address in the window.
    pub(crate) limit: u32,
    /// Start of the window.
    pub(crate) since: DateTime<Utc>,
}

/// Claims `event_id` for a send by `instance`, unless it is sent or in flight elsewhere, and
/// decides the daily cap (`cap`, `None` for an exempt mail or with the cap off) in the same
/// transaction: [`Claim::Suppressed`] when the cap keeps it back.
///
/// The cap decisions for one address are serialised (a PostgreSQL transaction-level advisory
/// lock per address, taken in a statement of its own so that the count, a statement later,
/// sees every decision committed before; SQLite has one connection, so its transactions are
/// serial anyway), and only admitted rows carry the key: the count cannot be raced past, so no
/// more than `cap` mails are ever admitted in a window, whatever the number of instances and
/// concurrent deliveries, and a burst is not suppressed as a whole either: its first `cap`
/// mails go out.
///
/// # Errors
/// Database errors (nothing changed: the transaction rolls back).
pub(crate) async fn claim(
    db: &DatabaseConnection,
    event_id: Uuid,
    event_type: &str,
    instance: Uuid,
    lease: Duration,
    cap: Option<&CapCheck>,
) -> Result<Claim, DbErr> {
    let now = Utc::now();
    let Some(cap) = cap else {
        return match insert_claim(db, event_id, event_type, instance, now, None).await? {
            Some(claim) => Ok(claim),
            None => take_over(db, event_id, instance, lease, now).await,
        };
    };
    let txn = db.begin().await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        let address_lock = u32::from_str_radix(cap.recipient_key.get(..8).unwrap_or("0"), 16)
            .map_or(0, |bits| i32::from_ne_bytes(bits.to_ne_bytes()));
        txn.execute_raw(statement(
            &txn,
            "SELECT pg_advisory_xact_lock($1, $2)",
            [CAP_LOCK_CLASS.into(), address_lock.into()],
        ))
        .await?;
    }
    let claim = match insert_claim(&txn, event_id, event_type, instance, now, Some(cap)).await? {
        Some(claim) => claim,
        None => match take_over(&txn, event_id, instance, lease, now).await? {
            claim @ (Claim::Retry | Claim::Resumed) => {
                if admit_taken_over(&txn, event_id, cap).await? {
                    claim
                } else {
                    Claim::Suppressed
                }
            }
            claim => claim,
        },
    };
    txn.commit().await?;
    Ok(claim)
}

/// Inserts the row of an event seen for the first time: `sending` (with the recipient key when
/// `cap` admits it) or `suppressed`; `None` when the row exists.
async fn insert_claim(
    db: &impl ConnectionTrait,
    event_id: Uuid,
    event_type: &str,
    instance: Uuid,
    now: DateTime<Utc>,
    cap: Option<&CapCheck>,
) -> Result<Option<Claim>, DbErr> {
    let Some(cap) = cap else {
        let inserted = db
            .execute_raw(statement(
                db,
                "INSERT INTO inbox (event_id, event_type, state, attempts, claimed_by, \
                 created_at, updated_at) VALUES ($1, $2, 'sending', 1, $3, $4, $4) \
                 ON CONFLICT (event_id) DO NOTHING",
                [
                    event_id.into(),
                    event_type.into(),
                    instance.into(),
                    now.into(),
                ],
            ))
            .await?
            .rows_affected();
        return Ok((inserted == 1).then_some(Claim::Fresh));
    };
    // `WHERE true`: SQLite needs it to parse `ON CONFLICT` after a `SELECT … FROM`.
    let inserted = db
        .query_one_raw(statement(
            db,
            "INSERT INTO inbox (event_id, event_type, state, attempts, claimed_by, created_at, \
             updated_at, recipient_key) \
             SELECT $1, $2, CASE WHEN admitted THEN 'sending' ELSE 'suppressed' END, 1, $3, $4, \
             $4, CASE WHEN admitted THEN $5 END \
             FROM (SELECT COUNT(*) < $7 AS admitted FROM inbox WHERE recipient_key = $5 \
             AND updated_at > $6 AND state IN ('sending', 'sent')) AS cap WHERE true \
             ON CONFLICT (event_id) DO NOTHING RETURNING state",
            [
                event_id.into(),
                event_type.into(),
                instance.into(),
                now.into(),
                cap.recipient_key.as_str().into(),
                cap.since.into(),
                i64::from(cap.limit).into(),
            ],
        ))
        .await?;
    inserted
        .map(|row| {
            Ok(
                match SendState::parse(&row.try_get::<String>("", "state")?)? {
                    SendState::Suppressed => Claim::Suppressed,
                    _ => Claim::Fresh,
                },
            )
        })
        .transpose()
}

/// Takes over the existing row of `event_id` with a compare-and-set on (state, attempts), so
/// that of two concurrent deliveries only one wins.
async fn take_over(
    db: &impl ConnectionTrait,
    event_id: Uuid,
    instance: Uuid,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Claim, DbErr> {
    for _ in 0..3 {
        let Some(entry) = find_inbox_entry(db, event_id).await? else {
            return Err(DbErr::RecordNotFound(format!(
                "inbox row {event_id} vanished"
            )));
        };
        let age = (now - entry.updated_at).to_std().unwrap_or_default();
        let claim = match entry.state {
            SendState::Sent => return Ok(Claim::AlreadySent),
            SendState::Suppressed => return Ok(Claim::AlreadySuppressed),
            SendState::Sending if entry.claimed_by != Some(instance) && age < lease => {
                return Ok(Claim::InFlightElsewhere {
                    remaining: lease.saturating_sub(age),
                });
            }
            SendState::Sending => Claim::Resumed,
            SendState::Failed => Claim::Retry,
        };
        let old_state = if entry.state == SendState::Sending {
            "sending"
        } else {
            "failed"
        };
        let updated = db
            .execute_raw(statement(
                db,
                "UPDATE inbox SET state = 'sending', attempts = attempts + 1, claimed_by = $2, \
                 updated_at = $3 WHERE event_id = $1 AND state = $4 AND attempts = $5",
                [
                    event_id.into(),
                    instance.into(),
                    now.into(),
                    old_state.into(),
                    entry.attempts.into(),
                ],
            ))
            .await?
            .rows_affected();
        if updated == 1 {
            return Ok(claim);
        }
    }
    Ok(Claim::InFlightElsewhere {
        remaining: Duration::ZERO,
    })
}

/// Class of the PostgreSQL advisory locks that serialise the cap decisions of one address (the
/// second key is derived from the address's key).
const CAP_LOCK_CLASS: i32 = 0x4341_5031; // "CAP1"

/// Decides the cap for `event_id`, taken over (`sending`) by the caller under the address's
/// lock: admitted (`true`) while fewer than `cap.limit` *other* admitted mails to the address
/// are `sending` or `sent` since `cap.since`, and then tagged with the key so later decisions
/// count it; otherwise marked `suppressed` (`false`).
async fn admit_taken_over(
    db: &impl ConnectionTrait,
    event_id: Uuid,
    cap: &CapCheck,
) -> Result<bool, DbErr> {
    let admitted_before: i64 = db
        .query_one_raw(statement(
            db,
            "SELECT COUNT(*) AS n FROM inbox WHERE recipient_key = $1 AND updated_at > $2 \
             AND state IN ('sending', 'sent') AND event_id <> $3",
            [
                cap.recipient_key.as_str().into(),
                cap.since.into(),
                event_id.into(),
            ],
        ))
        .await?
        .map(|row| row.try_get("", "n"))
        .transpose()?
        .unwrap_or(0);
    let admitted = admitted_before < i64::from(cap.limit);
    let (sql, values) = if admitted {
        (
            "UPDATE inbox SET recipient_key = $2 WHERE event_id = $1",
            [event_id.into(), cap.recipient_key.as_str().into()],
        )
    } else {
        (
            "UPDATE inbox SET state = 'suppressed', updated_at = $2, last_error = NULL \
             WHERE event_id = $1",
            [event_id.into(), Utc::now().into()],
        )
    };
    db.execute_raw(statement(db, sql, values)).await?;
    Ok(admitted)
}
