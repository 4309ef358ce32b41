//! `POST /user/phone/verify` `{phone, code}` → 200 `{status}`.

use std::time::Instant;

use axum::{Json, extract::State, http::HeaderMap};
use chrono::Utc;
use common::trace::TraceContext;
use sea_orm::TransactionTrait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    error::{ApiError, ApiJson, ErrorBody},
    phone::{
        Phone,
        verification::{self, CheckResult},
    },
    state::AppState,
};

/// Longest code read: codes are at most 10 digits; longer input is malformed, not wrong.
const MAX_CODE_CHARS: usize = 10;

/// `{"phone": "+447400123456", "code": "123456"}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PhoneCheckRequest {
    /// The number the code was sent to, E.164 (`+…`), or national with `PHONE_DEFAULT_REGION`.
    #[serde(deserialize_with = "super::trimmed")]
    phone: String,
    /// The code from the SMS (`PHONE_CODE_LENGTH` digits).
    code: String,
}

/// `{"status": "verified" | "incorrect" | "expired" | "max_attempts_reached" | "already_verified"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct PhoneCheckResponse {
    /// The result of the check.
    status: CheckResult,
}

/// `POST /user/phone/verify`.
#[utoipa::path(
    post,
    path = "/user/phone/verify",
    tag = "verification",
    request_body = PhoneCheckRequest,
    responses(
        (status = 200, description = "The check's result: `verified` (now), `incorrect` (wrong \
            code, one attempt used and attempts left; also for a number without a \
            verification), `expired` (no attempt used), `max_attempts_reached` (this wrong code \
            was the last of `PHONE_CODE_MAX_ATTEMPTS`, or they were used before, or \
            `PHONE_MAX_FAILED_CHECKS` for the number; the code is not checked any more), \
            `already_verified`", body = PhoneCheckResponse),
        (status = 422, description = "`invalid_phone`, or `validation_failed` for a code that \
            is not 1 to 10 digits", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many requests from this client \
            address (`RATE_LIMIT_VERIFY`); retry after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "`service_unavailable` or `overloaded`; retry after \
            `Retry-After` seconds", body = ErrorBody),
    )
)]
pub(crate) async fn check(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PhoneCheckRequest>,
) -> Result<Json<PhoneCheckResponse>, ApiError> {
    let started = Instant::now();
    let trace = TraceContext::from_headers(&headers);
    let status = check_phone_code(&state, &request.phone, &request.code, &trace).await?;
    // Answer in the same time whatever the number's state.
    super::super::answer_no_sooner_than(started, state.settings.min_response_time).await;
    Ok(Json(PhoneCheckResponse { status }))
}

/// Checks an SMS code (shared by `POST /user/phone/verify` and the check-your-inbox page): parses
/// the number and the code, checks in one transaction, counts. The caller answers no sooner than
/// `MIN_RESPONSE_TIME` after the request began.
///
/// # Errors
/// `invalid_phone`, `validation_failed` for a code that is not 1 to 10 digits, a database error.
#[tracing::instrument(name = "phone_check", skip_all, fields(correlation_id))]
pub(crate) async fn check_phone_code(
    state: &AppState,
    raw_phone: &str,
    code: &str,
    trace: &TraceContext,
) -> Result<CheckResult, ApiError> {
    tracing::Span::current().record("correlation_id", trace.correlation_id.as_str());
    let phone = Phone::parse(raw_phone.trim(), &state.settings)?;
    let code = code.trim();
    if code.is_empty() || code.len() > MAX_CODE_CHARS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::Validation(json!({
            "code": [{ "code": "invalid_format", "message": "must be the digits from the SMS" }]
        })));
    }
    let now = Utc::now();
    let txn = state.db.begin().await?;
    let checked = verification::check(&txn, &phone, code, now, &state.settings, trace).await?;
    txn.commit().await?;
    if checked.result == CheckResult::Verified {
        state.outbox_wakeup.wake();
        metrics::counter!("phone_verifications_verified_total").increment(1);
    }
    metrics::counter!("phone_checks_total", "result" => checked.label).increment(1);
    Ok(checked.result)
}
