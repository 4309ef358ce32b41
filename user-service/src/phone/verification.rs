//! Phone verifications: starting one, sending its code (again), checking a code.
//!
//! A number's current verification is its newest row: starting a verification cancels the
//! number's older pending ones (another registration took the number over). A resend re-sends
//! the same code while it is valid and starts a new verification (new nonce, new code) only
//! after expiry or a terminal state.
//!
//! A check is counted by one conditional `UPDATE … SET attempts = attempts + 1 WHERE … AND
//! attempts < max AND status = 'pending' AND expires_at > now RETURNING attempts` before the
//! code is compared, so concurrent guesses can never exceed `PHONE_CODE_MAX_ATTEMPTS` (the row
//! lock makes them queue, and each re-evaluates the condition). An expired code answers
//! `expired` without using an attempt. Failed checks per number across its verifications are
//! capped too (`PHONE_MAX_FAILED_CHECKS` per `PHONE_FAILED_CHECKS_WINDOW`); concurrent checks
//! can pass that cap by at most `PHONE_CODE_MAX_ATTEMPTS - 1`, the current verification's own
//! bound.

use chrono::{DateTime, SubsecRound, Utc};
use common::{
    events::{PhoneVerificationRequestedV1, PhoneVerifiedV1},
    trace::TraceContext,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, Order,
    QueryFilter, QueryOrder, QuerySelect, Statement, sea_query::Expr,
};
use serde::Serialize;
use uuid::Uuid;

use super::{Phone, code, sends};
use crate::{
    entity::phone_verification::{self, PhoneVerificationStatus as Status},
    rate_limit::ClientAddress,
    settings::Settings,
};

/// The answer to a code check (`POST /user/phone/verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CheckResult {
    /// The code was right: the number is verified now.
    Verified,
    /// The code was checked and is wrong, and attempts are left (also the answer for a number
    /// without a verification).
    Incorrect,
    /// The code expired (`PHONE_CODE_TTL`); no attempt was used. Resend for a new one.
    Expired,
    /// `PHONE_CODE_MAX_ATTEMPTS` checks failed, this one included when it was the last (or the
    /// number reached `PHONE_MAX_FAILED_CHECKS`); the code is not checked any more. Resend for
    /// a new one.
    MaxAttemptsReached,
    /// The number's verification was verified before; nothing changed.
    AlreadyVerified,
}

/// The `result` labels of `phone_checks_total`: the answers, plus `number_locked` (answered
/// `max_attempts_reached`) and `no_verification` (answered `incorrect`).
pub(crate) const CHECK_METRIC_RESULTS: &[&str] = &[
    "verified",
    "incorrect",
    "expired",
    "max_attempts_reached",
    "already_verified",
    "number_locked",
    "no_verification",
];

/// The number's newest verification, locked for the transaction on PostgreSQL when `lock`.
/// A canceled one only when every one is: two starts racing for the lock may leave the later
/// `created_at` on the one the other canceled.
///
/// # Errors
/// Database errors.
pub(crate) async fn newest(
    conn: &impl ConnectionTrait,
    phone: &Phone,
    lock: bool,
) -> Result<Option<phone_verification::Model>, DbErr> {
    let mut query = phone_verification::Entity::find()
        .filter(phone_verification::Column::Phone.eq(phone.e164()))
        .order_by(
            Expr::cust("CASE WHEN status = 'canceled' THEN 1 ELSE 0 END"),
            Order::Asc,
        )
        .order_by_desc(phone_verification::Column::CreatedAt)
        .order_by_desc(phone_verification::Column::Id);
    if lock && conn.get_database_backend() == DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    query.one(conn).await
}

/// Starts a verification of `phone` for `user_id` (no SMS yet: [`send`] it), ending the
/// number's older pending verifications: canceled if still valid, else expired.
///
/// # Errors
/// Database errors.
pub(crate) async fn start(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    phone: &Phone,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Result<phone_verification::Model, DbErr> {
    let backend = conn.get_database_backend();
    for (status, live) in [(Status::Canceled, ">"), (Status::Expired, "<=")] {
        conn.execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "UPDATE phone_verifications SET status = $1 \
                 WHERE phone = $2 AND status = $3 AND expires_at {live} $4"
            ),
            [
                status.into(),
                phone.e164().into(),
                Status::Pending.into(),
                now.into(),
            ],
        ))
        .await?;
    }
    let ttl = chrono::Duration::from_std(settings.phone_code_ttl)
        .map_err(|e| DbErr::Custom(format!("PHONE_CODE_TTL: {e}")))?;
    let row = phone_verification::Model {
        id: Uuid::now_v7(),
        user_id,
        phone: phone.e164().to_owned(),
        nonce: code::new_nonce(),
        code_length: i32::try_from(settings.phone_code_length).unwrap_or(6),
        status: Status::Pending,
        attempts: 0,
        sends: 0,
        last_sent_at: None,
        created_at: now,
        // Microseconds, as PostgreSQL stores it: the event carries the stored instant.
        expires_at: (now + ttl).trunc_subsecs(6),
        verified_at: None,
    };
    phone_verification::Entity::insert(phone_verification::ActiveModel {
        id: Set(row.id),
        user_id: Set(row.user_id),
        phone: Set(row.phone.clone()),
        nonce: Set(row.nonce.clone()),
        code_length: Set(row.code_length),
        status: Set(row.status),
        attempts: Set(0),
        sends: Set(0),
        last_sent_at: Set(None),
        created_at: Set(now),
        expires_at: Set(row.expires_at),
        verified_at: Set(None),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(row)
}

/// Sends the verification's code (again): counts the send on the verification, records it
/// and writes `PhoneVerificationRequestedV1`, all in the caller's transaction (which holds
/// [`sends::lock`]).
///
/// # Errors
/// Database errors.
pub(crate) async fn send(
    conn: &impl ConnectionTrait,
    verification: &phone_verification::Model,
    phone: &Phone,
    client: ClientAddress,
    now: DateTime<Utc>,
    settings: &Settings,
    trace: &TraceContext,
) -> Result<(), DbErr> {
    let send_number = u32::try_from(verification.sends).unwrap_or(0) + 1;
    conn.execute_raw(Statement::from_sql_and_values(
        conn.get_database_backend(),
        "UPDATE phone_verifications SET sends = sends + 1, last_sent_at = $1 WHERE id = $2",
        [now.into(), verification.id.into()],
    ))
    .await?;
    sends::record(
        conn,
        sends::SendRecord {
            phone,
            client,
            now,
            verification_id: Some(verification.id),
            send_number: Some(send_number),
            blocked: None,
        },
        settings,
    )
    .await?;
    outbox::enqueue(
        conn,
        now,
        PhoneVerificationRequestedV1 {
            user_id: verification.user_id,
            verification_id: verification.id,
            phone: phone.e164().to_owned(),
            code: code_of(verification, settings),
            expires_at: verification.expires_at,
            send_number,
        },
        trace,
    )
    .await?;
    tracing::info!(
        phone = %phone.masked(),
        verification_id = %verification.id,
        send_number,
        "SMS code queued"
    );
    Ok(())
}

fn code_of(verification: &phone_verification::Model, settings: &Settings) -> String {
    code::derive(
        settings.code_key(),
        verification.id,
        &verification.nonce,
        u32::try_from(verification.code_length).unwrap_or(6),
    )
}

/// Failed checks of `phone` in `PHONE_FAILED_CHECKS_WINDOW`, across its verifications: every
/// counted check except the right one of a verified verification.
async fn failed_checks(
    conn: &impl ConnectionTrait,
    phone: &Phone,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Result<i64, DbErr> {
    let since = now
        - chrono::Duration::from_std(settings.phone_failed_checks_window)
            .unwrap_or(chrono::Duration::MAX);
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "SELECT CAST(COALESCE(SUM(attempts), 0) \
               - COALESCE(SUM(CASE WHEN status = $1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS n \
             FROM phone_verifications WHERE phone = $2 AND created_at > $3",
            [Status::Verified.into(), phone.e164().into(), since.into()],
        ))
        .await?;
    row.map_or(Ok(0), |row| row.try_get("", "n"))
}

/// Sets `status` on a still-pending verification (a no-op when another request got there
/// first).
async fn end_pending(conn: &impl ConnectionTrait, id: Uuid, status: Status) -> Result<(), DbErr> {
    conn.execute_raw(Statement::from_sql_and_values(
        conn.get_database_backend(),
        "UPDATE phone_verifications SET status = $1 WHERE id = $2 AND status = $3",
        [status.into(), id.into(), Status::Pending.into()],
    ))
    .await?;
    Ok(())
}

/// What a check found, for the answer and the metric label.
pub(crate) struct Checked {
    pub(crate) result: CheckResult,
    pub(crate) label: &'static str,
}

impl From<CheckResult> for Checked {
    fn from(result: CheckResult) -> Self {
        let label = match result {
            CheckResult::Verified => "verified",
            CheckResult::Incorrect => "incorrect",
            CheckResult::Expired => "expired",
            CheckResult::MaxAttemptsReached => "max_attempts_reached",
            CheckResult::AlreadyVerified => "already_verified",
        };
        Self { result, label }
    }
}

/// Checks `given` against the number's current verification in the caller's transaction;
/// on the right code marks it and the user verified and writes `PhoneVerifiedV1`.
///
/// # Errors
/// Database errors.
pub(crate) async fn check(
    conn: &impl ConnectionTrait,
    phone: &Phone,
    given: &str,
    now: DateTime<Utc>,
    settings: &Settings,
    trace: &TraceContext,
) -> Result<Checked, DbErr> {
    let Some(current) = newest(conn, phone, false).await? else {
        return Ok(Checked {
            result: CheckResult::Incorrect,
            label: "no_verification",
        });
    };
    match current.status_at(now) {
        Status::Verified => return Ok(CheckResult::AlreadyVerified.into()),
        Status::Canceled => {
            return Ok(Checked {
                result: CheckResult::Incorrect,
                label: "no_verification",
            });
        }
        _ => {}
    }
    if failed_checks(conn, phone, now, settings).await?
        >= i64::from(settings.phone_max_failed_checks)
    {
        tracing::warn!(phone = %phone.masked(), "phone locked: too many failed code checks");
        return Ok(Checked {
            result: CheckResult::MaxAttemptsReached,
            label: "number_locked",
        });
    }
    let counted = conn
        .query_one_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "UPDATE phone_verifications SET attempts = attempts + 1 \
             WHERE id = $1 AND status = $2 AND attempts < $3 AND expires_at > $4 \
             RETURNING attempts",
            [
                current.id.into(),
                Status::Pending.into(),
                i32::try_from(settings.phone_code_max_attempts)
                    .unwrap_or(i32::MAX)
                    .into(),
                now.into(),
            ],
        ))
        .await?;
    let Some(counted) = counted else {
        // Not checkable: expired, out of attempts, or verified by a concurrent request.
        let row = phone_verification::Entity::find_by_id(current.id)
            .one(conn)
            .await?
            .unwrap_or(current);
        let result = match row.status_at(now) {
            Status::Verified => CheckResult::AlreadyVerified,
            Status::Expired => {
                end_pending(conn, row.id, Status::Expired).await?;
                CheckResult::Expired
            }
            Status::Canceled => CheckResult::Incorrect,
            Status::MaxAttemptsReached => CheckResult::MaxAttemptsReached,
            Status::Pending
                if u32::try_from(row.attempts).unwrap_or(u32::MAX)
                    >= settings.phone_code_max_attempts =>
            {
                end_pending(conn, row.id, Status::MaxAttemptsReached).await?;
                CheckResult::MaxAttemptsReached
            }
            // Only if a concurrent check rolled back between our two statements: nothing was
            // counted, the code was not compared.
            Status::Pending => CheckResult::Incorrect,
        };
        return Ok(result.into());
    };
    let attempts: i32 = counted.try_get("", "attempts")?;
    if !code::matches(&code_of(&current, settings), given) {
        if u32::try_from(attempts).unwrap_or(u32::MAX) >= settings.phone_code_max_attempts {
            end_pending(conn, current.id, Status::MaxAttemptsReached).await?;
            tracing::warn!(
                phone = %phone.masked(),
                verification_id = %current.id,
                "phone verification ended after too many wrong codes"
            );
            // The seed's answer to the last wrong code: MAX_ATTEMPTS_REACHED, not "try again".
            return Ok(CheckResult::MaxAttemptsReached.into());
        }
        return Ok(CheckResult::Incorrect.into());
    }
    let marked = conn
        .execute_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "UPDATE phone_verifications SET status = $1, verified_at = $2 \
             WHERE id = $3 AND status = $4",
            [
                Status::Verified.into(),
                now.into(),
                current.id.into(),
                Status::Pending.into(),
            ],
        ))
        .await?;
    if marked.rows_affected() == 0 {
        return Ok(CheckResult::AlreadyVerified.into());
    }
    conn.execute_raw(Statement::from_sql_and_values(
        conn.get_database_backend(),
        "UPDATE users SET phone = $1, phone_verified_at = $2 WHERE id = $3",
        [phone.e164().into(), now.into(), current.user_id.into()],
    ))
    .await?;
    outbox::enqueue(
        conn,
        now,
        PhoneVerifiedV1 {
            user_id: current.user_id,
            verification_id: current.id,
            phone: phone.e164().to_owned(),
            verified_at: now,
        },
        trace,
    )
    .await?;
    tracing::info!(
        phone = %phone.masked(),
        user_id = %current.user_id,
        "phone verified"
    );
    Ok(CheckResult::Verified.into())
}
