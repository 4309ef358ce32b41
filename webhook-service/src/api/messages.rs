//! The messages of an endpoint (its deliveries of kind `webhook`): list them, read their
//! attempts, replay one, recover every failed one since a time.

use std::collections::HashMap;

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    endpoints::find_endpoint,
    error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, FieldErrors},
    fields,
};
use crate::{
    entity::{attempt, delivery, message},
    state::AppState,
};

/// A message as one endpoint sees it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct MessageOut {
    message_id: Uuid,
    event_type: String,
    /// `pending`, `succeeded`, `failed` or `cancelled`.
    status: String,
    /// Attempts made (since the last replay).
    attempts: i32,
    /// When the next attempt is due (pending only).
    next_attempt_at: Option<DateTime<Utc>>,
    last_status: Option<i32>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

/// A page of messages, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct MessagePage {
    data: Vec<MessageOut>,
    /// Pass as `before` for the next (older) page; null on the last page.
    next: Option<Uuid>,
}

/// `GET /v1/endpoints/{id}/messages` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct MessageQuery {
    /// `pending`, `succeeded`, `failed` or `cancelled`.
    status: Option<String>,
    /// 1 to 250 (default 50).
    limit: Option<u64>,
    /// Older than this: a message id (the `next` of the previous page) or an RFC 3339 time.
    before: Option<String>,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct AttemptOut {
    /// 1-based (counting again from 1 after a replay).
    attempt: i32,
    started_at: DateTime<Utc>,
    duration_ms: i64,
    /// The URL called, userinfo and query values redacted.
    url: String,
    /// HTTP status, when an answer came.
    status: Option<i32>,
    /// `timeout`, `connect`, `dns`, `tls`, `blocked`, … when no usable answer came.
    error_kind: Option<String>,
    error: Option<String>,
    /// The response headers that matter (`content-type`, `retry-after`, …).
    #[schema(value_type = Option<Object>)]
    response_headers: Option<Value>,
    /// The start of the response body (at most 20 kB).
    response_body: Option<String>,
}

impl From<attempt::Model> for AttemptOut {
    fn from(row: attempt::Model) -> Self {
        Self {
            attempt: row.attempt,
            started_at: row.started_at,
            duration_ms: row.duration_ms,
            url: row.url,
            status: row.status,
            error_kind: row.error_kind,
            error: row.error,
            response_headers: row.response_headers,
            response_body: row.response_body,
        }
    }
}

/// The attempt log of a delivery, oldest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct AttemptList {
    data: Vec<AttemptOut>,
}

/// Every attempt of `delivery_id`, oldest first.
pub(crate) async fn attempts_of(
    conn: &impl ConnectionTrait,
    delivery_id: Uuid,
) -> Result<Vec<AttemptOut>, ApiError> {
    Ok(attempt::Entity::find()
        .filter(attempt::Column::DeliveryId.eq(delivery_id))
        .order_by_asc(attempt::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .map(AttemptOut::from)
        .collect())
}

/// The endpoint's delivery of a message, or 404.
async fn find_message(
    conn: &impl ConnectionTrait,
    endpoint_id: Uuid,
    message_id: Uuid,
) -> Result<delivery::Model, ApiError> {
    delivery::Entity::find()
        .filter(delivery::Column::EndpointId.eq(endpoint_id))
        .filter(delivery::Column::MessageId.eq(message_id))
        .filter(delivery::Column::Kind.eq(delivery::kind::WEBHOOK))
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound("message"))
}

/// `GET /v1/endpoints/{id}/messages`.
#[utoipa::path(get, path = "/v1/endpoints/{id}/messages", tag = "messages",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id"), MessageQuery),
    responses(
        (status = 200, description = "A page of the endpoint's messages, newest first", body = MessagePage),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`validation_failed` (status, limit or before)", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<MessageQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let mut errors = FieldErrors::default();
    let limit = fields::page_size(query.limit, &mut errors);
    let statuses = [
        delivery::status::PENDING,
        delivery::status::SUCCEEDED,
        delivery::status::FAILED,
        delivery::status::CANCELLED,
    ];
    if let Some(status) = &query.status
        && !statuses.contains(&status.as_str())
    {
        errors.add("status", "invalid_status", statuses.join(", "));
    }
    let before_time = query
        .before
        .as_deref()
        .and_then(|text| match text.parse::<Uuid>() {
            Ok(_) => None,
            Err(_) => DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    errors.add(
                        "before",
                        "invalid_cursor",
                        "a message id or an RFC 3339 time",
                    )
                })
                .ok(),
        });
    errors.into_result(())?;
    find_endpoint(&state.db, id).await?;

    let mut select = delivery::Entity::find()
        .filter(delivery::Column::EndpointId.eq(id))
        .filter(delivery::Column::Kind.eq(delivery::kind::WEBHOOK));
    if let Some(status) = &query.status {
        select = select.filter(delivery::Column::Status.eq(status.as_str()));
    }
    if let Some(time) = before_time {
        select = select.filter(delivery::Column::CreatedAt.lt(time));
    } else if let Some(Ok(cursor)) = query.before.as_deref().map(str::parse::<Uuid>) {
        // (created_at, id) strictly before the cursor's: stable even when several deliveries
        // share a creation time.
        let cursor = find_message(&state.db, id, cursor).await?;
        select = select.filter(
            Condition::any()
                .add(delivery::Column::CreatedAt.lt(cursor.created_at))
                .add(
                    Condition::all()
                        .add(delivery::Column::CreatedAt.eq(cursor.created_at))
                        .add(delivery::Column::Id.lt(cursor.id)),
                ),
        );
    }
    let mut rows = select
        .order_by_desc(delivery::Column::CreatedAt)
        .order_by_desc(delivery::Column::Id)
        .limit(limit + 1)
        .all(&state.db)
        .await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let ids: Vec<Uuid> = rows.iter().filter_map(|row| row.message_id).collect();
    let event_types: HashMap<Uuid, String> = message::Entity::find()
        .filter(message::Column::Id.is_in(ids))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|m| (m.id, m.event_type))
        .collect();
    let next = more
        .then(|| rows.last().and_then(|row| row.message_id))
        .flatten();
    let data = rows
        .into_iter()
        .map(|row| {
            let message_id = row.message_id.unwrap_or_default();
            MessageOut {
                message_id,
                event_type: event_types.get(&message_id).cloned().unwrap_or_default(),
                next_attempt_at: (row.status == delivery::status::PENDING)
                    .then_some(row.next_attempt_at),
                status: row.status,
                attempts: row.attempts,
                last_status: row.last_status,
                last_error: row.last_error,
                created_at: row.created_at,
                completed_at: row.completed_at,
            }
        })
        .collect();
    Ok(Json(MessagePage { data, next }))
}

/// `GET /v1/endpoints/{id}/messages/{message_id}/attempts`.
#[utoipa::path(get, path = "/v1/endpoints/{id}/messages/{message_id}/attempts", tag = "messages",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id"),
           ("message_id" = Uuid, Path, description = "Message id")),
    responses(
        (status = 200, description = "The attempt log, oldest first", body = AttemptList),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn attempts(
    State(state): State<AppState>,
    ApiPath((id, message_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<AttemptList>, ApiError> {
    let delivery = find_message(&state.db, id, message_id).await?;
    Ok(Json(AttemptList {
        data: attempts_of(&state.db, delivery.id).await?,
    }))
}

/// SQL that puts finished deliveries back to pending, due now, with a fresh retry schedule.
const REPLAY: &str = "UPDATE deliveries SET status = 'pending', attempts = 0, \
     next_attempt_at = $1, completed_at = NULL, updated_at = $1 WHERE ";

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
