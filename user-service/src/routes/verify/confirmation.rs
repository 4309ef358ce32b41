//! `POST /user/verify`: confirms by link token (JSON, or the confirmation page's form post,
//! answered with HTML) or by email + code, counting wrong codes.

use std::time::Instant;

use axum::{
    Form,
    extract::{FromRequest, Request, State},
    http::header,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use common::events::UserVerifiedV1;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use common::trace::TraceContext;

use crate::{
    domain::UserEmail,
    entity::{
        user::{self, UserStatus},
        verification::{self, Usability},
    },
    error::{ApiError, ApiJson, ErrorBody},
    rate_limit::ClientAddress,
    state::AppState,
};

use super::{VerifyOutcome, find_by_token, link_outcome, page::outcome_page};

/// `POST /user/verify` body: a link token, or the email and the code from the mail.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum VerifyRequest {
    /// `{"token": "…"}` (the link).
    Token {
        /// Token from the link.
        token: String,
    },
    /// `{"email": "…", "code": "123456"}`.
    Code {
        /// The account's email (normalised like at registration).
        #[schema(value_type = String)]
        email: UserEmail,
        /// Six-digit code from the mail.
        code: String,
    },
}

/// The page's form post.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct TokenForm {
    token: String,
}

/// `{"status": "verified" | "already_verified"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct VerifyResponse {
    /// The outcome.
    status: VerifyOutcome,
}

/// `POST /user/verify`: JSON answers JSON; the confirmation page's form post answers HTML.
#[utoipa::path(
    post,
    path = "/user/verify",
    tag = "verification",
    request_body(content(
        (VerifyRequest = "application/json"),
        (TokenForm = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Verified now or before (JSON); the form post gets an HTML page", body = VerifyResponse),
        (status = 400, description = "`invalid_code`: the code is wrong or cannot be used (expired, locked after too many wrong codes, no pending verification for the address); one answer for all", body = ErrorBody),
        (status = 404, description = "`invalid_token`: unknown, used or replaced link", body = ErrorBody),
        (status = 410, description = "`verification_expired`", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many requests from this client address, retry after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "`service_unavailable`: the database is unreachable; `overloaded`: too many requests in progress; retry after `Retry-After` seconds", body = ErrorBody),
    )
)]
pub(crate) async fn verify(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let trace = TraceContext::from_headers(request.headers());
    let client = ClientAddress::of(request.extensions());
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        // A form post comes from the link page: refused when another site made the browser send it.
        if crate::pages::is_cross_site(&state, request.headers(), request.uri()) {
            return crate::pages::cross_site_refused(&state);
        }
        let result = match Form::<TokenForm>::from_request(request, &state).await {
            Ok(Form(form)) => verify_by_token(&state, &form.token, &trace).await,
            Err(_) => Err(ApiError::InvalidToken),
        };
        return outcome_page(&state, result);
    }
    let result = match ApiJson::<VerifyRequest>::from_request(request, &state).await {
        Ok(ApiJson(VerifyRequest::Token { token })) => {
            verify_by_token(&state, &token, &trace).await
        }
        Ok(ApiJson(VerifyRequest::Code { email, code })) => {
            let result = verify_by_code(&state, &email, &code, client, &trace).await;
            // The time of the answer must not tell the address's state either.
            super::super::answer_no_sooner_than(started, state.settings.min_response_time).await;
            result
        }
        Err(error) => Err(error),
    };
    match result {
        Ok(status) => axum::Json(VerifyResponse { status }).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Verifies with a link token.
#[tracing::instrument(name = "verify_by_token", skip_all, fields(user_id))]
async fn verify_by_token(
    state: &AppState,
    token: &str,
    trace: &TraceContext,
) -> Result<VerifyOutcome, ApiError> {
    let now = Utc::now();
    let txn = state.db.begin().await?;
    let (found, user) = match find_by_token(&txn, token).await? {
        Some(found) => found,
        None => return Err(count_failure("link", ApiError::InvalidToken)),
    };
    tracing::Span::current().record("user_id", tracing::field::display(user.id));
    match link_outcome(&found, &user, now, state.settings.max_code_attempts) {
        Ok(VerifyOutcome::Verified) => {}
        Ok(VerifyOutcome::AlreadyVerified) => return Ok(VerifyOutcome::AlreadyVerified),
        Err(error) => return Err(count_failure("link", error)),
    }
    let outcome = complete_verification(&txn, &user, found.id, now, trace).await?;
    txn.commit().await?;
    state.outbox_wakeup.wake();
    count_success("link", outcome, &user, now);
    Ok(outcome)
}

/// Verifies with email + code, counting wrong codes per verification and per account.
///
/// Every failure is the same [`ApiError::InvalidCode`], whatever the address's state (unknown,
/// verified, no or expired verification, locked, wrong code): the answer never tells whether
/// an address has an account. Why it failed goes to the metrics (admin port) only.
#[tracing::instrument(name = "verify_by_code", skip_all, fields(user_id))]
pub(crate) async fn verify_by_code(
    state: &AppState,
    email: &UserEmail,
    code: &str,
    client: ClientAddress,
    trace: &TraceContext,
) -> Result<VerifyOutcome, ApiError> {
    let settings = &state.settings;
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::Validation(json!({
            "code": [{ "code": "invalid_format", "message": "must be six digits" }]
        })));
    }
    let now = Utc::now();
    let txn = state.db.begin().await?;
    // Lock order everywhere: the user row first, then its verifications (resend, reminders and
    // link verification do the same), so concurrent paths queue instead of deadlocking. The
    // user lock also serialises the counting of wrong attempts.
    let mut find_user = user::Entity::find().filter(user::Column::Email.eq(email.as_str()));
    if txn.get_database_backend() == DbBackend::Postgres {
        find_user = find_user.lock_exclusive();
    }
    let Some(user) = find_user.one(&txn).await? else {
        return Err(code_refused("unknown_address"));
    };
    tracing::Span::current().record("user_id", tracing::field::display(user.id));
    if wrong_codes_today(&user, now) >= settings.max_wrong_codes_per_day {
        return Err(code_refused("daily_limit"));
    }
    if user.status == UserStatus::Verified {
        // Only the holder of the code that verified the address learns that it is verified, and
        // only while that code would still be valid; guesses count like any wrong code, so the
        // answer cannot be used to find verified accounts by guessing either.
        let used = verification::Entity::find()
            .filter(verification::Column::UserId.eq(user.id))
            .filter(verification::Column::ConsumedAt.is_not_null())
            .one(&txn)
            .await?
            .filter(|used| used.code_expires_at.is_none_or(|at| now < at));
        let Some(used) = used else {
            return Err(code_refused("already_verified"));
        };
        if code_matches(state, &used, code) {
            return Ok(VerifyOutcome::AlreadyVerified);
        }
        count_wrong_code(&txn, &user, used.id, now).await?;
        txn.commit().await?;
        return Err(code_refused("already_verified"));
    }
    let Some(current) = current_verification(&txn, &user).await? else {
        return Err(code_refused("no_verification"));
    };
    if !current.code_usable(now, settings.max_code_attempts) {
        let reason = match current.usability(now, settings.max_code_attempts) {
            Usability::CodeLocked => "locked",
            _ => "expired",
        };
        return Err(code_refused(reason));
    }
    if !code_matches(state, &current, code) {
        count_wrong_code(&txn, &user, current.id, now).await?;
        txn.commit().await?;
        metrics::counter!("verification_failed_attempts_total").increment(1);
        let attempts = u32::try_from(current.attempts).unwrap_or(u32::MAX) + 1;
        let today = wrong_codes_today(&user, now) + 1;
        if attempts == settings.max_code_attempts || today == settings.max_wrong_codes_per_day {
            // A security event: someone may be guessing this account's codes.
            tracing::warn!(
                %client,
                user_id = %user.id,
                wrong_codes_today = today,
                "verification code locked after too many wrong codes"
            );
        }
        return Err(code_refused("wrong_code"));
    }
    let outcome = complete_verification(&txn, &user, current.id, now, trace).await?;
    txn.commit().await?;
    state.outbox_wakeup.wake();
    count_success("code", outcome, &user, now);
    Ok(outcome)
}

/// Wrong codes of the account in its current 24-hour window.
fn wrong_codes_today(user: &user::Model, now: DateTime<Utc>) -> u32 {
    match user.wrong_codes_since {
        Some(since) if since > now - chrono::Duration::days(1) => {
            u32::try_from(user.wrong_codes).unwrap_or(u32::MAX)
        }
        _ => 0,
    }
}

/// Counts a wrong code on the verification and on the account (whose 24-hour window starts
/// again once the last one is over), in the caller's transaction.
async fn count_wrong_code(
    txn: &DatabaseTransaction,
    user: &user::Model,
    verification_id: uuid::Uuid,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let backend = txn.get_database_backend();
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        "UPDATE verifications SET attempts = attempts + 1 WHERE id = $1",
        [verification_id.into()],
    ))
    .await?;
    let window_start = now - chrono::Duration::days(1);
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        "UPDATE users SET \
           wrong_codes = CASE WHEN wrong_codes_since IS NULL OR wrong_codes_since <= $1 \
                         THEN 1 ELSE wrong_codes + 1 END, \
           wrong_codes_since = CASE WHEN wrong_codes_since IS NULL OR wrong_codes_since <= $1 \
                               THEN $2 ELSE wrong_codes_since END \
         WHERE id = $3",
        [window_start.into(), now.into(), user.id.into()],
    ))
    .await?;
    Ok(())
}

/// The user's newest live verification (the caller holds the user row lock).
async fn current_verification(
    txn: &DatabaseTransaction,
    user: &user::Model,
) -> Result<Option<verification::Model>, ApiError> {
    Ok(verification::Entity::find()
        .filter(verification::Column::UserId.eq(user.id))
        .filter(verification::Column::SupersededAt.is_null())
        .filter(verification::Column::ConsumedAt.is_null())
        .order_by_desc(verification::Column::CreatedAt)
        .one(txn)
        .await?)
}

/// Constant-time comparison of `code` with the verification's stored code hash.
fn code_matches(state: &AppState, verification: &verification::Model, code: &str) -> bool {
    state
        .settings
        .code_key()
        .hash_code(verification.id, code)
        .as_bytes()
        .ct_eq(verification.code_hash.as_bytes())
        .into()
}

/// Marks the user verified (only if still pending), consumes the verification and writes
/// `UserVerifiedV1`, in the caller's transaction.
async fn complete_verification(
    txn: &DatabaseTransaction,
    user: &user::Model,
    verification_id: uuid::Uuid,
    now: DateTime<Utc>,
    trace: &TraceContext,
) -> Result<VerifyOutcome, ApiError> {
    let backend = txn.get_database_backend();
    // The status guard makes concurrent confirmations safe: only one updates the row.
    let updated = txn
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "UPDATE users SET status = $1, verified_at = $2, next_reminder_at = NULL \
             WHERE id = $3 AND status = $4",
            [
                UserStatus::Verified.into(),
                now.into(),
                user.id.into(),
                UserStatus::PendingVerification.into(),
            ],
        ))
        .await?;
    if updated.rows_affected() == 0 {
        return Ok(VerifyOutcome::AlreadyVerified);
    }
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        "UPDATE verifications SET consumed_at = $1 WHERE id = $2",
        [now.into(), verification_id.into()],
    ))
    .await?;
    outbox::enqueue(
        txn,
        now,
        UserVerifiedV1 {
            user_id: user.id,
            email: user.email.clone(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            verified_at: now,
        },
        trace,
    )
    .await?;
    tracing::info!("user verified");
    Ok(VerifyOutcome::Verified)
}

/// Counts a success; a verification (committed) also records the account's time to verify.
fn count_success(
    method: &'static str,
    outcome: VerifyOutcome,
    user: &user::Model,
    now: DateTime<Utc>,
) {
    let outcome = match outcome {
        VerifyOutcome::Verified => {
            crate::metrics::verified_after(method, user.created_at, now);
            "verified"
        }
        VerifyOutcome::AlreadyVerified => "already_verified",
    };
    metrics::counter!("verifications_total", "method" => method, "outcome" => outcome).increment(1);
}

/// [`ApiError::InvalidCode`], counted with the real `reason` (metrics are not public).
fn code_refused(reason: &'static str) -> ApiError {
    metrics::counter!("verifications_total", "method" => "code", "outcome" => reason).increment(1);
    ApiError::InvalidCode
}

fn count_failure(method: &'static str, error: ApiError) -> ApiError {
    metrics::counter!("verifications_total", "method" => method, "outcome" => error.code())
        .increment(1);
    error
}
