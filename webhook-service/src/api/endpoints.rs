//! `/v1/endpoints`: create, list, read, change and delete the endpoints webhooks go to. The
//! secret is answered only by create (and by `secrets`); header values that look like
//! credentials are shown as `***`.

use std::collections::BTreeMap;

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use super::{
    error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, FieldErrors},
    fields,
    headers::{HeaderUse, custom_headers, redacted},
};
use crate::{entity::delivery, entity::endpoint, signing::Secret, state::AppState};

/// `POST /v1/endpoints`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateEndpoint {
    /// http(s) URL the webhooks are POSTed to.
    url: String,
    /// Public event types to receive; absent or null: every sign-up type (operational types
    /// such as `endpoint.disabled` only when listed).
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    /// Extra request headers, name → value.
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// Default true.
    #[serde(default)]
    enabled: Option<bool>,
    /// Your own `whsec_…` secret (at least 24 bytes); default: a new random one.
    #[serde(default)]
    secret: Option<String>,
}

/// `PATCH /v1/endpoints/{id}`: the fields given change; `event_types: null` means every sign-up
/// type.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateEndpoint {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    event_types: Option<Option<Vec<String>>>,
    /// Replaces every extra header.
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// `true` also clears `disabled_reason` and the failure window.
    #[serde(default)]
    enabled: Option<bool>,
}

/// A field that is present (even as null) is `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// An endpoint as answered.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct EndpointOut {
    id: Uuid,
    /// A password in the URL is shown as `***`.
    url: String,
    description: String,
    /// null: every sign-up type (operational types only when listed).
    event_types: Option<Vec<String>>,
    /// Values that look like credentials are `***`.
    headers: BTreeMap<String, String>,
    enabled: bool,
    /// `manual`, `gone` (the endpoint answered 410) or `failing`.
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Only in the answer to create.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl From<endpoint::Model> for EndpointOut {
    fn from(row: endpoint::Model) -> Self {
        let headers: BTreeMap<String, String> =
            serde_json::from_value(row.headers).unwrap_or_default();
        let pairs: Vec<(String, String)> = headers.into_iter().collect();
        Self {
            id: row.id,
            url: fields::shown_url(&row.url),
            description: row.description,
            event_types: row
                .event_types
                .and_then(|types| serde_json::from_value(types).ok()),
            headers: redacted(&pairs).into_iter().collect(),
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
            secret: None,
        }
    }
}

/// A page of endpoints.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct EndpointPage {
    data: Vec<EndpointOut>,
    /// Pass as `after` for the next page; null on the last page.
    next: Option<Uuid>,
}

/// `GET /v1/endpoints` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// 1 to 250 (default 50).
    limit: Option<u64>,
    /// The `next` of the previous page.
    after: Option<Uuid>,
}

fn header_map(
    headers: Option<BTreeMap<String, String>>,
    errors: &mut FieldErrors,
) -> serde_json::Value {
    let pairs = headers.unwrap_or_default().into_iter().collect();
    let checked = custom_headers(pairs, HeaderUse::Webhook, "headers", errors);
    serde_json::json!(checked.into_iter().collect::<BTreeMap<_, _>>())
}

/// Finds an endpoint or answers 404.
pub(crate) async fn find_endpoint(
    conn: &impl ConnectionTrait,
    id: Uuid,
) -> Result<endpoint::Model, ApiError> {
    endpoint::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))
}

/// `POST /v1/endpoints`.
#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", request_body = CreateEndpoint,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the only answer with the secret besides `GET …/secret`", body = EndpointOut),
        (status = 422, description = "`validation_failed`: URL refused, unknown event type, refused header…", body = ErrorBody),
    ))]
#[tracing::instrument(name = "create_endpoint", skip_all, fields(endpoint_id))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<CreateEndpoint>,
) -> Result<(StatusCode, Json<EndpointOut>), ApiError> {
    let mut errors = FieldErrors::default();
    let url = fields::checked_url(&input.url, "url", &state.egress, &mut errors);
    let event_types = fields::event_types(input.event_types, &mut errors);
    let description = fields::description(input.description.unwrap_or_default(), &mut errors);
    let headers = header_map(input.headers, &mut errors);
    let secret = match input.secret {
        None => Some(Secret::generate()),
        Some(text) => Secret::parse(&text)
            .map_err(|e| errors.add("secret", "invalid_secret", e.to_string()))
            .ok(),
    };
    let secret = errors.into_result(secret)?.unwrap_or_else(Secret::generate);
    let enabled = input.enabled.unwrap_or(true);
    let now = Utc::now();
    let row = endpoint::ActiveModel {
        id: Set(Uuid::now_v7()),
        url: Set(url),
        description: Set(description),
        event_types: Set(event_types.map(|types| serde_json::json!(types))),
        headers: Set(headers),
        secret: Set(secret.to_text()),
        previous_secret: Set(None),
        previous_secret_until: Set(None),
        enabled: Set(enabled),
        disabled_reason: Set((!enabled).then(|| "manual".to_owned())),
        failing_since: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let row = row.insert(&state.db).await?;
    tracing::Span::current().record("endpoint_id", tracing::field::display(row.id));
    tracing::info!("endpoint created");
    let secret = row.secret.clone();
    let mut out = EndpointOut::from(row);
    out.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

/// `GET /v1/endpoints`: by id (creation order), `limit` per page.
#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints", params(ListQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of endpoints", body = EndpointPage)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<EndpointPage>, ApiError> {
    let mut errors = FieldErrors::default();
    let limit = fields::page_size(query.limit, &mut errors);
    errors.into_result(())?;
    let mut select = endpoint::Entity::find().order_by_asc(endpoint::Column::Id);
    if let Some(after) = query.after {
        select = select.filter(endpoint::Column::Id.gt(after));
    }
    let mut rows = select.limit(limit + 1).all(&state.db).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = more.then(|| rows.last().map(|row| row.id)).flatten();
    Ok(Json(EndpointPage {
        data: rows.into_iter().map(EndpointOut::from).collect(),
        next,
    }))
}

/// `GET /v1/endpoints/{id}`.
#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint (no secret)", body = EndpointOut),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EndpointOut>, ApiError> {
    Ok(Json(find_endpoint(&state.db, id).await?.into()))
}

/// `PATCH /v1/endpoints/{id}`.
#[utoipa::path(patch, path = "/v1/endpoints/{id}", tag = "endpoints", request_body = UpdateEndpoint,
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The changed endpoint", body = EndpointOut),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
    ))]
#[tracing::instrument(name = "update_endpoint", skip_all, fields(endpoint_id = %id))]
pub(crate) async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<UpdateEndpoint>,
) -> Result<Json<EndpointOut>, ApiError> {
    let mut errors = FieldErrors::default();
    // Only the fields given are written, so a concurrent change by the engine (failure window,
    // automatic disabling) of another column is kept.
    let mut row = endpoint::ActiveModel {
        id: sea_orm::ActiveValue::Unchanged(id),
        updated_at: Set(Utc::now()),
        ..Default::default()
    };
    if let Some(url) = input.url {
        row.url = Set(fields::checked_url(&url, "url", &state.egress, &mut errors));
        // A new address starts with a clean record: the old one's failure run must not
        // disable it at its first failure.
        row.failing_since = Set(None);
    }
    if let Some(description) = input.description {
        row.description = Set(fields::description(description, &mut errors));
    }
    if let Some(types) = input.event_types {
        let types = fields::event_types(types, &mut errors);
        row.event_types = Set(types.map(|types| serde_json::json!(types)));
    }
    if input.headers.is_some() {
        row.headers = Set(header_map(input.headers, &mut errors));
    }
    match input.enabled {
        Some(true) => {
            row.enabled = Set(true);
            row.disabled_reason = Set(None);
            row.failing_since = Set(None);
        }
        Some(false) => {
            row.enabled = Set(false);
            row.disabled_reason = Set(Some("manual".into()));
        }
        None => {}
    }
    errors.into_result(())?;
    let updated = match row.update(&state.db).await {
        Ok(updated) => updated,
        Err(sea_orm::DbErr::RecordNotUpdated) => return Err(ApiError::NotFound("endpoint")),
        Err(error) => return Err(error.into()),
    };
    tracing::info!("endpoint updated");
    Ok(Json(updated.into()))
}

/// `DELETE /v1/endpoints/{id}`: the endpoint goes, and its pending deliveries are cancelled in
/// the same transaction (the finished ones stay, for the record). A delivery in flight is left
/// to finish: its attempt is recorded, and if it is to be retried the engine cancels it at its
/// next attempt (`endpoint_deleted`).
#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 204, description = "Deleted; its pending messages are cancelled (one in flight once its attempt ends)"),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
#[tracing::instrument(name = "delete_endpoint", skip_all, fields(endpoint_id = %id))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let now = Utc::now();
    let txn = state.db.begin().await?;
    let deleted = endpoint::Entity::delete_by_id(id).exec(&txn).await?;
    if deleted.rows_affected == 0 {
        return Err(ApiError::NotFound("endpoint"));
    }
    let backend = txn.get_database_backend();
    let cancelled = txn
        .execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "UPDATE deliveries SET status = $1, completed_at = $2, updated_at = $2, \
                 leased_until = NULL WHERE endpoint_id = $3 AND status = $4 AND {}",
                delivery::not_in_flight(backend, "$2")
            ),
            [
                delivery::status::CANCELLED.into(),
                now.into(),
                id.into(),
                delivery::status::PENDING.into(),
            ],
        ))
        .await?;
    txn.commit().await?;
    tracing::info!(cancelled = cancelled.rows_affected(), "endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}
