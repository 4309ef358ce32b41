//! "Someone tried to sign up with your address": a registration for an address that already has
//! an account still answers 409 `email_taken`, and the address owner is told, at most once per
//! `SIGNUP_ATTEMPT_NOTICE_INTERVAL`.
//!
//! One transaction, the same pattern as every event: a conditional update of
//! `users.last_attempt_notice_at` (of concurrent duplicates only one passes it, like the resend
//! limit) and the `SignupAttemptedV1` outbox row commit together or not at all. Nothing of the
//! refused request is kept: its password was hashed only to be thrown away, and its names are
//! not in the event.

use chrono::Utc;
use common::{events::SignupAttemptedV1, trace::TraceContext};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Statement, TransactionTrait,
};

use crate::{
    domain::UserEmail,
    entity::user::{self, UserStatus},
    state::AppState,
};

/// What [`notify_owner`] did, for the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The notice event was written.
    Written,
    /// A notice went out less than the interval ago: nothing written.
    RateLimited,
    /// No account has the address (it was deleted since the insert failed).
    NoAccount,
}

impl Notice {
    fn label(self) -> &'static str {
        match self {
            Self::Written => "written",
            Self::RateLimited => "rate_limited",
            Self::NoAccount => "no_account",
        }
    }
}

/// Writes a `SignupAttemptedV1` for the account holding `email`, unless one was written less than
/// `SIGNUP_ATTEMPT_NOTICE_INTERVAL` ago.
///
/// # Errors
/// Database errors (the transaction is rolled back: no notice, no timestamp moved).
pub(crate) async fn notify_owner(
    state: &AppState,
    email: &UserEmail,
    trace: &TraceContext,
) -> anyhow::Result<Notice> {
    let notice = write_notice(state, email, trace).await?;
    metrics::counter!("signup_attempt_notices_total", "outcome" => notice.label()).increment(1);
    Ok(notice)
}

async fn write_notice(
    state: &AppState,
    email: &UserEmail,
    trace: &TraceContext,
) -> anyhow::Result<Notice> {
    let Some(owner) = user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(&state.db)
        .await?
    else {
        return Ok(Notice::NoAccount);
    };
    let now = Utc::now();
    let cutoff = now - chrono::Duration::from_std(state.settings.signup_attempt_notice_interval)?;
    let txn = state.db.begin().await?;
    // The conditional update is the rate limit: of concurrent duplicates only one passes.
    let claimed = txn
        .execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "UPDATE users SET last_attempt_notice_at = $1 WHERE id = $2 \
             AND (last_attempt_notice_at IS NULL OR last_attempt_notice_at <= $3)",
            [now.into(), owner.id.into(), cutoff.into()],
        ))
        .await?;
    if claimed.rows_affected() == 0 {
        return Ok(Notice::RateLimited);
    }
    outbox::enqueue(
        &txn,
        now,
        SignupAttemptedV1 {
            user_id: owner.id,
            email: owner.email,
            attempted_at: now,
            account_verified: owner.status == UserStatus::Verified,
        },
        trace,
    )
    .await?;
    txn.commit().await?;
    state.outbox_wakeup.wake();
    tracing::info!(user_id = %owner.id, "signup attempt notice written");
    Ok(Notice::Written)
}
