//! `POST /user/verify`: confirms by link token (JSON, or the confirmation page's form post,
//! answered with HTML) or by email + code, counting wrong codes.

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
    state::AppState,
    verification::hash_code,
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
        (status = 400, description = "`invalid_code` with `details.attempts_left`", body = ErrorBody),
        (status = 404, description = "`invalid_token`: unknown, used or replaced link", body = ErrorBody),
        (status = 410, description = "`verification_expired`", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: request a new verification; or `rate_limited`: too many requests from this client address, retry after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "`service_unavailable`: the database is unreachable; `overloaded`: too many requests in progress (or, on register, every password hashing slot stayed busy for `HASH_QUEUE_TIMEOUT`); retry after `Retry-After` seconds", body = ErrorBody),
    )
)]
pub(crate) async fn verify(State(state): State<AppState>, request: Request) -> Response {
    let trace = TraceContext::from_headers(request.headers());
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let result = match Form::<TokenForm>::from_request(request, &state).await {
            Ok(Form(form)) => verify_by_token(&state, &form.token, &trace).await,
            Err(_) => Err(ApiError::InvalidToken),
        };
        return outcome_page(result);
    }
    let result = match ApiJson::<VerifyRequest>::from_request(request, &state).await {
        Ok(ApiJson(VerifyRequest::Token { token })) => {
            verify_by_token(&state, &token, &trace).await
        }
        Ok(ApiJson(VerifyRequest::Code { email, code })) => {
            verify_by_code(&state, &email, &code, &trace).await
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
    count_success("link", outcome);
    Ok(outcome)
}

/// Verifies with email + code, counting wrong codes.
#[tracing::instrument(name = "verify_by_code", skip_all, fields(user_id))]
async fn verify_by_code(
    state: &AppState,
    email: &UserEmail,
    code: &str,
    trace: &TraceContext,
) -> Result<VerifyOutcome, ApiError> {
    let max_attempts = state.settings.max_code_attempts;
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
        // Same answer as a wrong code: this endpoint does not reveal which addresses exist.
        return Err(count_failure(
            "code",
            ApiError::InvalidCode {
                attempts_left: max_attempts,
            },
        ));
    };
    tracing::Span::current().record("user_id", tracing::field::display(user.id));
    if user.status == UserStatus::Verified {
        // Only the holder of the code that verified the address learns that it is verified;
        // anyone else gets the answer an unknown address gets.
        let used = verification::Entity::find()
            .filter(verification::Column::UserId.eq(user.id))
            .filter(verification::Column::ConsumedAt.is_not_null())
            .one(&txn)
            .await?;
        return match used {
            Some(used) if code_matches(&used, code) => Ok(VerifyOutcome::AlreadyVerified),
            _ => Err(count_failure(
                "code",
                ApiError::InvalidCode {
                    attempts_left: max_attempts,
                },
            )),
        };
    }
    let Some(current) = current_verification(&txn, &user).await? else {
        return Err(count_failure(
            "code",
            ApiError::InvalidCode { attempts_left: 0 },
        ));
    };
    match current.usability(now, max_attempts) {
        Usability::Usable => {}
        // Not returned by current_verification (under the user lock); answered like no
        // verification at all.
        Usability::Consumed | Usability::Superseded => {
            return Err(count_failure(
                "code",
                ApiError::InvalidCode { attempts_left: 0 },
            ));
        }
        Usability::Expired => return Err(count_failure("code", ApiError::VerificationExpired)),
        Usability::CodeLocked => return Err(count_failure("code", ApiError::TooManyAttempts)),
    }
    let attempts = u32::try_from(current.attempts).unwrap_or(u32::MAX);
    if !code_matches(&current, code) {
        txn.execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "UPDATE verifications SET attempts = attempts + 1 WHERE id = $1",
            [current.id.into()],
        ))
        .await?;
        txn.commit().await?;
        metrics::counter!("verification_failed_attempts_total").increment(1);
        let attempts_left = max_attempts.saturating_sub(attempts + 1);
        return Err(count_failure(
            "code",
            ApiError::InvalidCode { attempts_left },
        ));
    }
    let outcome = complete_verification(&txn, &user, current.id, now, trace).await?;
    txn.commit().await?;
    state.outbox_wakeup.wake();
    count_success("code", outcome);
    Ok(outcome)
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
fn code_matches(verification: &verification::Model, code: &str) -> bool {
    hash_code(verification.id, code)
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

fn count_success(method: &'static str, outcome: VerifyOutcome) {
    let outcome = match outcome {
        VerifyOutcome::Verified => "verified",
        VerifyOutcome::AlreadyVerified => "already_verified",
    };
    metrics::counter!("verifications_total", "method" => method, "outcome" => outcome).increment(1);
}

fn count_failure(method: &'static str, error: ApiError) -> ApiError {
    metrics::counter!("verifications_total", "method" => method, "outcome" => error.code())
        .increment(1);
    error
}
