//! `POST /user/phone/verification/resend` `{phone}` → 202, whether or not the number has a
//! verification: sends the current code again while it is valid (same code, attempts kept;
//! at most `PHONE_MAX_SENDS` SMS per verification, `PHONE_RESEND_COOLDOWN` apart), or starts a
//! new verification with a new code after expiry or a terminal state.
//!
//! Only the input and the velocity limits change the answer: 422 for a malformed, refused-type
//! or refused-country number, 429 when a velocity limit is reached. The limits count every
//! accepted request of a number, prefix or client address alike, known number or not, so even
//! the 429 does not tell whether a number has a verification.

use std::time::Instant;

use axum::{Json, extract::State, http::HeaderMap, http::StatusCode};
use chrono::Utc;
use common::trace::TraceContext;
use sea_orm::TransactionTrait;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    entity::phone_verification::PhoneVerificationStatus as Status,
    error::{ApiError, ApiJson, ErrorBody},
    phone::{
        Phone, SendBlock,
        sends::{self, SendRecord},
        verification,
    },
    rate_limit::ClientAddress,
    state::AppState,
};

/// `{"phone": "+447400123456"}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PhoneResendRequest {
    /// The number, E.164 (`+…`), or national with `PHONE_DEFAULT_REGION`.
    #[serde(deserialize_with = "super::trimmed")]
    phone: String,
}

/// `POST /user/phone/verification/resend`.
#[utoipa::path(
    post,
    path = "/user/phone/verification/resend",
    tag = "verification",
    request_body = PhoneResendRequest,
    responses(
        (status = 202, description = "Always `{\"status\": \"accepted\"}`, whether or not the \
            number has a verification (or the send was skipped: cooldown, `PHONE_MAX_SENDS`, \
            already verified)", body = Object),
        (status = 422, description = "`invalid_phone`, `phone_type_not_allowed` \
            (premium-rate, shared-cost, toll-free, pager, voicemail, UAN, personal, VoIP \
            with `PHONE_BLOCK_VOIP`), `phone_country_not_allowed` (`SMS_ALLOWED_COUNTRIES`) or \
            `validation_failed`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: a velocity limit (per number, prefix, \
            client address or global, per hour) or the client's request rate \
            (`RATE_LIMIT_RESEND`); retry after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "`service_unavailable` or `overloaded`; retry after \
            `Retry-After` seconds", body = ErrorBody),
    )
)]
pub(crate) async fn resend(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientAddress,
    ApiJson(request): ApiJson<PhoneResendRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let trace = TraceContext::from_headers(&headers);
    resend_phone_code(&state, &request.phone, client, &trace, Instant::now()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "status": "accepted" }))))
}

/// Sends the code again or starts a new verification (see the module docs); shared by
/// `POST /user/phone/verification/resend` and the check-your-inbox page. Answers no sooner than
/// `MIN_RESPONSE_TIME` after `started` once the number is accepted.
///
/// # Errors
/// `invalid_phone`, `phone_type_not_allowed`, `phone_country_not_allowed`, `rate_limited` (a
/// velocity limit), a database error.
#[tracing::instrument(name = "phone_resend", skip_all, fields(correlation_id))]
pub(crate) async fn resend_phone_code(
    state: &AppState,
    raw_phone: &str,
    client: ClientAddress,
    trace: &TraceContext,
    started: Instant,
) -> Result<(), ApiError> {
    tracing::Span::current().record("correlation_id", trace.correlation_id.as_str());
    let phone = Phone::parse(raw_phone.trim(), &state.settings)?;
    let now = Utc::now();
    if let Some(block) = phone.policy_block(&state.settings) {
        record_blocked(state, &phone, client, now, block).await?;
        return Err(block.api_error(0).unwrap_or(ApiError::PhoneTypeNotAllowed));
    }
    let outcome = resend_code(state, &phone, client, now, trace).await;
    super::super::answer_no_sooner_than(started, state.settings.min_response_time).await;
    outcome
}

/// Records a request refused before any verification is looked at, on its own.
pub(crate) async fn record_blocked(
    state: &AppState,
    phone: &Phone,
    client: ClientAddress,
    now: chrono::DateTime<Utc>,
    block: SendBlock,
) -> Result<(), ApiError> {
    let record = SendRecord {
        phone,
        client,
        now,
        verification_id: None,
        send_number: None,
        blocked: Some(block),
    };
    sends::record(&state.db, record, &state.settings).await?;
    Ok(())
}

/// The resend transaction: velocity limits, then the number's current verification.
async fn resend_code(
    state: &AppState,
    phone: &Phone,
    client: ClientAddress,
    now: chrono::DateTime<Utc>,
    trace: &TraceContext,
) -> Result<(), ApiError> {
    let settings = &state.settings;
    let txn = state.db.begin().await?;
    sends::lock(&txn).await?;
    let quiet = |verification_id, block| SendRecord {
        phone,
        client,
        now,
        verification_id,
        send_number: None,
        blocked: Some(block),
    };
    if let Some((block, wait)) = sends::velocity_block(&txn, phone, client, now, settings).await? {
        sends::record(&txn, quiet(None, block), settings).await?;
        txn.commit().await?;
        return Err(block
            .api_error(wait)
            .unwrap_or(ApiError::RateLimited { retry_after: wait }));
    }
    let current = verification::newest(&txn, phone, true).await?;
    let to_send = match &current {
        None => Err(quiet(None, SendBlock::NoVerification)),
        Some(current) => match current.status_at(now) {
            Status::Verified => Err(quiet(Some(current.id), SendBlock::AlreadyVerified)),
            Status::Pending => {
                let cooldown = chrono::Duration::from_std(settings.phone_resend_cooldown)
                    .unwrap_or(chrono::Duration::MAX);
                if u32::try_from(current.sends).unwrap_or(u32::MAX) >= settings.phone_max_sends {
                    Err(quiet(Some(current.id), SendBlock::MaxSends))
                } else if current.last_sent_at.is_some_and(|at| now < at + cooldown) {
                    Err(quiet(Some(current.id), SendBlock::Cooldown))
                } else {
                    // The same code again: attempts are not reset.
                    Ok(current.clone())
                }
            }
            // A new code only once the old one can no longer be used.
            Status::Expired | Status::MaxAttemptsReached | Status::Canceled => {
                Ok(verification::start(&txn, current.user_id, phone, now, settings).await?)
            }
        },
    };
    match to_send {
        Ok(verification) => {
            verification::send(&txn, &verification, phone, client, now, settings, trace).await?;
            txn.commit().await?;
            state.outbox_wakeup.wake();
        }
        Err(record) => {
            sends::record(&txn, record, settings).await?;
            txn.commit().await?;
        }
    }
    Ok(())
}
