//! The messages of an endpoint (its deliveries of kind `webhook`): list them and read their
//! attempts (replaying them is `replay`).

use std::collections::HashMap;

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    endpoints::find_endpoint,
    error::{ApiError, ApiPath, ApiQuery, ErrorBody, FieldErrors},
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
pub(crate) async fn find_message(
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
