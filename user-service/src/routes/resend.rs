//! `POST /user/verification/resend`: a new verification mail on request.
//!
//! The answer is always 202 with the same body, after at least `MIN_RESPONSE_TIME`, whether the
//! address is unknown, pending, verified or rate-limited: the endpoint does not reveal which
//! addresses have accounts. For a pending user at most one resend per `RESEND_MIN_INTERVAL` and
//! `MAX_RESENDS_PER_DAY` per 24 hours are acted on; extra requests are accepted, ignored and
//! counted.

use std::time::Instant;

use axum::{Json, extract::State, http::HeaderMap, http::StatusCode};
use chrono::Utc;
use common::events::VerificationResentV1;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Statement, TransactionTrait,
};
use serde::Deserialize;
use serde_json::{Value, json};

use common::trace::TraceContext;

use crate::{
    domain::UserEmail,
    entity::user::{self, UserStatus},
    error::{ApiError, ApiJson, ErrorBody},
    state::AppState,
    verification::issue_verification,
};

/// `{"email": "…"}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResendRequest {
    #[schema(value_type = String)]
    email: UserEmail,
}

/// `POST /user/verification/resend`.
#[utoipa::path(
    post,
    path = "/user/verification/resend",
    tag = "verification",
    request_body = ResendRequest,
    responses(
        (status = 202, description = "Always `{\"status\": \"accepted\"}`, whatever the address", body = Object),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many requests from this client address; retry after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "`service_unavailable`: the database is unreachable; `overloaded`: too many requests in progress (or, on register, every password hashing slot stayed busy for `HASH_QUEUE_TIMEOUT`); retry after `Retry-After` seconds", body = ErrorBody),
    )
)]
#[tracing::instrument(name = "resend", skip_all, fields(correlation_id))]
pub(crate) async fn resend(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ResendRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let started = Instant::now();
    let trace = TraceContext::from_headers(&headers);
    tracing::Span::current().record("correlation_id", trace.correlation_id.as_str());
    let outcome = resend_verification(&state, &request.email, &trace).await;
    super::answer_no_sooner_than(started, state.settings.min_response_time).await;
    metrics::counter!("verification_resends_total", "outcome" => outcome?).increment(1);
    Ok((StatusCode::ACCEPTED, Json(json!({ "status": "accepted" }))))
}

/// Issues a new verification for a pending user unless rate-limited; returns what happened
/// (a metrics label, never shown to the client). Shared with the check-your-inbox page.
///
/// # Errors
/// A database failure.
pub(crate) async fn resend_verification(
    state: &AppState,
    email: &UserEmail,
    trace: &TraceContext,
) -> Result<&'static str, ApiError> {
    let settings = &state.settings;
    let Some(found) = user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(&state.db)
        .await?
    else {
        return Ok("unknown_address");
    };
    if found.status != UserStatus::PendingVerification {
        return Ok("already_verified");
    }
    let now = Utc::now();
    let cutoff = now
        - chrono::Duration::from_std(settings.resend_min_interval).unwrap_or(chrono::Duration::MAX);
    let window_start = now - chrono::Duration::days(1);
    let txn = state.db.begin().await?;
    // The conditional update is the rate limit: of concurrent requests only one passes, and at
    // most MAX_RESENDS_PER_DAY pass per 24-hour window (which starts again once it is over).
    let claimed = txn
        .execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "UPDATE users SET last_resend_at = $1, \
               resends = CASE WHEN resends_since IS NULL OR resends_since <= $5 \
                         THEN 1 ELSE resends + 1 END, \
               resends_since = CASE WHEN resends_since IS NULL OR resends_since <= $5 \
                               THEN $1 ELSE resends_since END \
             WHERE id = $2 AND status = $3 \
             AND (last_resend_at IS NULL OR last_resend_at <= $4) \
             AND (resends_since IS NULL OR resends_since <= $5 OR resends < $6)",
            [
                now.into(),
                found.id.into(),
                UserStatus::PendingVerification.into(),
                cutoff.into(),
                window_start.into(),
                i32::try_from(settings.max_resends_per_day)
                    .unwrap_or(i32::MAX)
                    .into(),
            ],
        ))
        .await?;
    if claimed.rows_affected() == 0 {
        return Ok("rate_limited");
    }
    let verification = issue_verification(&txn, found.id, now, settings).await?;
    outbox::enqueue(
        &txn,
        now,
        VerificationResentV1 {
            user_id: found.id,
            email: found.email,
            first_name: found.first_name,
            last_name: found.last_name,
            verification,
            registered_at: Some(found.created_at),
        },
        trace,
    )
    .await?;
    txn.commit().await?;
    state.outbox_wakeup.wake();
    metrics::counter!("verifications_issued_total", "reason" => "resend").increment(1);
    tracing::info!(user_id = %found.id, "verification resent");
    Ok("sent")
}
