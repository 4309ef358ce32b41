//! The inbox: deduplication of events by id, and the record of each mail's send state.
//!
//! A row is *claimed* (`sending`) before the mail goes out and marked `sent` after the SMTP
//! server accepted it; only then is the message acked. So a crash between the two leaves a
//! `sending` row, and the redelivered message sends the mail again: the one duplicate the design
//! allows (counted as `email_resent_after_crash_total`). A `sent` row turns every later delivery
//! of the same event into an acked duplicate. `failed` records the last failure, transient
//! (a retry is queued) or permanent (the message is dead-lettered); a retry or a replay claims
//! the row again.
//!
//! A `sending` row claimed by *another* instance less than a lease ago is in flight there: that
//! delivery is still unacked, so the broker will redeliver it if the other instance dies, and
//! this copy is deferred instead of sent twice at once.
//!
//! `suppressed` records a mail the per-address daily cap kept back ([`admit_under_cap`]); like
//! `sent`, it is final: a later delivery of the event is acked without sending.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait, Value,
};
use uuid::Uuid;

/// Send state of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendState {
    /// Claimed; a send is in flight, or was when the process died.
    Sending,
    /// The SMTP server accepted the mail.
    Sent,
    /// The last attempt failed (see `last_error`).
    Failed,
    /// Not sent: the recipient had reached `MAX_MAILS_PER_ADDRESS_PER_DAY`.
    Suppressed,
}

impl SendState {
    fn parse(text: &str) -> Result<Self, DbErr> {
        match text {
            "sending" => Ok(Self::Sending),
            "sent" => Ok(Self::Sent),
            "failed" => Ok(Self::Failed),
            "suppressed" => Ok(Self::Suppressed),
            other => Err(DbErr::Custom(format!("unknown inbox state {other:?}"))),
        }
    }
}

/// One inbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// The row's key, the AMQP `message_id` of the event.
    pub event_id: Uuid,
    /// Where the mail's send stands.
    pub state: SendState,
    /// Send attempts started so far.
    pub attempts: i32,
    /// Why the last attempt failed; cleared once the mail is sent.
    pub last_error: Option<String>,
    /// Instance that claimed the row last.
    pub claimed_by: Option<Uuid>,
    /// When the row last changed; the retention counts from here.
    pub updated_at: DateTime<Utc>,
}

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
    /// Another instance claimed it less than the lease ago; look again after `remaining`.
    InFlightElsewhere {
        /// Time until the other claim counts as stale.
        remaining: Duration,
    },
}

/// Reads the row of `event_id`.
///
/// # Errors
/// Database errors.
pub async fn find_inbox_entry(
    db: &impl ConnectionTrait,
    event_id: Uuid,
) -> Result<Option<InboxEntry>, DbErr> {
    let row = db
        .query_one_raw(statement(
            db,
            "SELECT event_id, state, attempts, last_error, claimed_by, updated_at \
             FROM inbox WHERE event_id = $1",
            [event_id.into()],
        ))
        .await?;
    row.map(|row| {
        Ok(InboxEntry {
            event_id: row.try_get("", "event_id")?,
            state: SendState::parse(&row.try_get::<String>("", "state")?)?,
            attempts: row.try_get("", "attempts")?,
            last_error: row.try_get("", "last_error")?,
            claimed_by: row.try_get("", "claimed_by")?,
            updated_at: row.try_get("", "updated_at")?,
        })
    })
    .transpose()
}

/// Claims `event_id` for a send by `instance`, unless it is sent or in flight elsewhere.
///
/// # Errors
/// Database errors.
pub(crate) async fn claim(
    db: &impl ConnectionTrait,
    event_id: Uuid,
    event_type: &str,
    instance: Uuid,
    lease: Duration,
) -> Result<Claim, DbErr> {
    let now = Utc::now();
    let inserted = db
        .execute_raw(statement(
            db,
            "INSERT INTO inbox (event_id, event_type, state, attempts, claimed_by, created_at, \
             updated_at) VALUES ($1, $2, 'sending', 1, $3, $4, $4) ON CONFLICT (event_id) DO NOTHING",
            [
                event_id.into(),
                event_type.into(),
                instance.into(),
                now.into(),
            ],
        ))
        .await?
        .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    // The row exists. Take it over with a compare-and-set on (state, attempts), so that of two
    // concurrent deliveries only one wins.
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

/// Records that the SMTP server accepted the mail.
///
/// # Errors
/// Database errors.
pub(crate) async fn mark_sent(db: &impl ConnectionTrait, event_id: Uuid) -> Result<(), DbErr> {
    let now = Utc::now();
    db.execute_raw(statement(
        db,
        "UPDATE inbox SET state = 'sent', sent_at = $2, updated_at = $2, last_error = NULL \
         WHERE event_id = $1",
        [event_id.into(), now.into()],
    ))
    .await?;
    Ok(())
}

/// Records a failed attempt (transient or permanent) with its reason.
///
/// # Errors
/// Database errors.
pub(crate) async fn mark_failed(
    db: &impl ConnectionTrait,
    event_id: Uuid,
    error: &str,
) -> Result<(), DbErr> {
    db.execute_raw(statement(
        db,
        "UPDATE inbox SET state = 'failed', last_error = $2, updated_at = $3 WHERE event_id = $1",
        [event_id.into(), error.into(), Utc::now().into()],
    ))
    .await?;
    Ok(())
}

/// Class of the PostgreSQL advisory locks that serialise the cap decisions of one address (the
/// second key is derived from the address's key).
const CAP_LOCK_CLASS: i32 = 0x4341_5031; // "CAP1"

/// Decides whether `event_id`, claimed (`sending`) by the caller, may be sent under the daily
/// cap: admitted (`true`) while fewer than `cap` *other* admitted mails to `recipient_key` are
/// `sending` or `sent` since `since`, and then tagged with the key so later decisions count it;
/// otherwise marked `suppressed` (`false`).
///
/// The decisions for one address are serialised (a PostgreSQL transaction-level advisory lock
/// per address; SQLite has one connection, so its transactions are serial anyway), and only
/// admitted rows carry the key: the count cannot be raced past, so no more than `cap` mails are
/// ever admitted in a window, whatever the number of instances and concurrent deliveries, and a
/// burst is not suppressed as a whole either: its first `cap` mails go out.
///
/// # Errors
/// Database errors (nothing changed: the transaction rolls back).
pub(crate) async fn admit_under_cap(
    db: &DatabaseConnection,
    event_id: Uuid,
    recipient_key: &str,
    cap: u32,
    since: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let txn = db.begin().await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        let address_lock = u32::from_str_radix(recipient_key.get(..8).unwrap_or("0"), 16)
            .map_or(0, |bits| i32::from_ne_bytes(bits.to_ne_bytes()));
        txn.execute_raw(statement(
            &txn,
            "SELECT pg_advisory_xact_lock($1, $2)",
            [CAP_LOCK_CLASS.into(), address_lock.into()],
        ))
        .await?;
    }
    let admitted_before: i64 = txn
        .query_one_raw(statement(
            &txn,
            "SELECT COUNT(*) AS n FROM inbox WHERE recipient_key = $1 AND updated_at > $2 \
             AND state IN ('sending', 'sent') AND event_id <> $3",
            [recipient_key.into(), since.into(), event_id.into()],
        ))
        .await?
        .map(|row| row.try_get("", "n"))
        .transpose()?
        .unwrap_or(0);
    let admitted = admitted_before < i64::from(cap);
    let (sql, values) = if admitted {
        (
            "UPDATE inbox SET recipient_key = $2 WHERE event_id = $1",
            [event_id.into(), recipient_key.into()],
        )
    } else {
        (
            "UPDATE inbox SET state = 'suppressed', updated_at = $2, last_error = NULL \
             WHERE event_id = $1",
            [event_id.into(), Utc::now().into()],
        )
    };
    txn.execute_raw(statement(&txn, sql, values)).await?;
    txn.commit().await?;
    Ok(admitted)
}

/// Deletes up to `batch` rows untouched for longer than `retention`; returns how many.
///
/// # Errors
/// Database errors.
pub(crate) async fn purge_expired(
    db: &impl ConnectionTrait,
    retention: Duration,
    batch: u32,
) -> Result<u64, DbErr> {
    let cutoff = common::database::retention_cutoff(retention);
    Ok(db
        .execute_raw(statement(
            db,
            "DELETE FROM inbox WHERE event_id IN \
             (SELECT event_id FROM inbox WHERE updated_at < $1 LIMIT $2)",
            [cutoff.into(), i64::from(batch).into()],
        ))
        .await?
        .rows_affected())
}

fn statement<const N: usize>(
    db: &impl ConnectionTrait,
    sql: &str,
    values: [Value; N],
) -> Statement {
    Statement::from_sql_and_values(db.get_database_backend(), sql, values)
}
