//! An endpoint's signing secret: `POST /v1/endpoints/{id}/rotate-secret` and
//! `GET /v1/endpoints/{id}/secret`, the only answers (with create) that carry it.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    endpoints::find_endpoint,
    error::{ApiError, ApiPath, ErrorBody},
};
use crate::{signing::Secret, state::AppState};

/// An endpoint's current secret.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct SecretOut {
    /// `whsec_<base64>`.
    secret: String,
    /// Until then the previous secret also signs (after a rotation).
    previous_secret_until: Option<DateTime<Utc>>,
}

/// `POST /v1/endpoints/{id}/rotate-secret`: a new secret; the old one keeps signing (a second
/// `v1,` signature) for `WEBHOOK_SECRET_ROTATION_GRACE`, so receivers can switch without losing
/// a message.
#[utoipa::path(post, path = "/v1/endpoints/{id}/rotate-secret", tag = "endpoints",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The new secret", body = SecretOut),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
#[tracing::instrument(name = "rotate_secret", skip_all, fields(endpoint_id = %id))]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<SecretOut>, ApiError> {
    let now = Utc::now();
    let grace = chrono::Duration::from_std(state.settings.webhook_secret_rotation_grace)
        .unwrap_or(chrono::Duration::MAX);
    let until = now
        .checked_add_signed(grace)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let secret = Secret::generate().to_text();
    // One statement: `previous_secret = secret` reads the row's value before this update, so
    // two concurrent rotations cannot both keep the same old secret and lose a new one.
    let updated = state
        .db
        .execute_raw(Statement::from_sql_and_values(
            state.db.get_database_backend(),
            "UPDATE endpoints SET previous_secret = secret, previous_secret_until = $1, \
             secret = $2, updated_at = $3 WHERE id = $4",
            [until.into(), secret.clone().into(), now.into(), id.into()],
        ))
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::NotFound("endpoint"));
    }
    tracing::info!("endpoint secret rotated");
    Ok(Json(SecretOut {
        secret,
        previous_secret_until: Some(until),
    }))
}

/// `GET /v1/endpoints/{id}/secret`.
#[utoipa::path(get, path = "/v1/endpoints/{id}/secret", tag = "endpoints",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The current secret", body = SecretOut),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<SecretOut>, ApiError> {
    let row = find_endpoint(&state.db, id).await?;
    let now = Utc::now();
    Ok(Json(SecretOut {
        secret: row.secret,
        previous_secret_until: row.previous_secret_until.filter(|until| *until > now),
    }))
}
