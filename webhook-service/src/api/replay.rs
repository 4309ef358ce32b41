//! Sending an endpoint's messages again: one (`retry`, whatever its outcome was) or every
//! failed one since a time (`recover`, after an outage of the receiver). Either is pending
//! again, due now, with a fresh retry schedule (`attempts` back to 0, no lease); the engine is
//! woken after the commit. A late attempt of an earlier claim cannot overwrite it: recording
//! matches the claim's `leased_until`, not the attempt count.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{
    endpoints::find_endpoint,
    error::{ApiError, ApiJson, ApiPath, ErrorBody, FieldErrors},
    messages::find_message,
};
use crate::{entity::delivery, state::AppState};

/// SQL that puts finished deliveries back to pending, due now, with a fresh retry schedule.
const REPLAY: &str = "UPDATE deliveries SET status = 'pending', attempts = 0, \
     next_attempt_at = $1, leased_until = NULL, completed_at = NULL, updated_at = $1 WHERE ";

/// 409 `endpoint_disabled` unless the endpoint exists (404) and is enabled.
async fn ensure_enabled(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    if find_endpoint(&state.db, id).await?.enabled {
        Ok(())
    } else {
        Err(ApiError::EndpointDisabled)
    }
}

/// `POST /v1/endpoints/{id}/messages/{message_id}/retry`: sends the message again, whatever
/// its outcome was (failed, cancelled, or succeeded: a resend), with a fresh retry schedule.
#[utoipa::path(post, path = "/v1/endpoints/{id}/messages/{message_id}/retry", tag = "messages",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id"),
           ("message_id" = Uuid, Path, description = "Message id")),
    responses(
        (status = 202, description = "Pending again, due now", body = Object),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`already_pending`, or `endpoint_disabled`", body = ErrorBody),
    ))]
#[tracing::instrument(name = "retry_message", skip_all, fields(endpoint_id = %id, message_id = %message_id))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    ApiPath((id, message_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    ensure_enabled(&state, id).await?;
    let delivery = find_message(&state.db, id, message_id).await?;
    // Never a pending one: it may be in flight (its lease in next_attempt_at), and making it
    // due now would send it twice at once.
    let updated = state
        .db
        .execute_raw(Statement::from_sql_and_values(
            state.db.get_database_backend(),
            format!("{REPLAY}id = $2 AND status <> 'pending'"),
            [Utc::now().into(), delivery.id.into()],
        ))
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::AlreadyPending);
    }
    state.due.wake();
    tracing::info!("message replayed");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "message_id": message_id, "status": "pending" })),
    ))
}

/// `POST /v1/endpoints/{id}/recover`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecoverRequest {
    /// RFC 3339: failed messages created at or after it are sent again.
    #[schema(format = DateTime)]
    since: String,
    /// RFC 3339: and before it (default: now).
    #[serde(default)]
    #[schema(format = DateTime)]
    until: Option<String>,
}

/// `POST /v1/endpoints/{id}/recover`: every failed message of the endpoint created since
/// `since` is pending again, due now, with a fresh retry schedule (after an outage of the
/// receiver).
#[utoipa::path(post, path = "/v1/endpoints/{id}/recover", tag = "messages",
    security(("bearer" = [])), request_body = RecoverRequest,
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 202, description = "`{recovered: n}`", body = Object),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`endpoint_disabled`", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
    ))]
#[tracing::instrument(name = "recover_endpoint", skip_all, fields(endpoint_id = %id))]
pub(crate) async fn recover(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<RecoverRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut errors = FieldErrors::default();
    let mut time = |field: &str, text: &str| {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| errors.add(field, "invalid_time", "must be an RFC 3339 time"))
            .ok()
    };
    let since = time("since", &input.since);
    let until = input.until.as_deref().and_then(|text| time("until", text));
    let since = errors.into_result(since)?.unwrap_or_default();
    ensure_enabled(&state, id).await?;
    let now = Utc::now();
    let recovered = state
        .db
        .execute_raw(Statement::from_sql_and_values(
            state.db.get_database_backend(),
            format!(
                "{REPLAY}endpoint_id = $2 AND kind = $3 AND status = $4 \
                 AND created_at >= $5 AND created_at < $6"
            ),
            [
                now.into(),
                id.into(),
                delivery::kind::WEBHOOK.into(),
                delivery::status::FAILED.into(),
                since.into(),
                until.unwrap_or(now).into(),
            ],
        ))
        .await?
        .rows_affected();
    if recovered > 0 {
        state.due.wake();
    }
    tracing::info!(recovered, "failed messages recovered");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "recovered": recovered })),
    ))
}
