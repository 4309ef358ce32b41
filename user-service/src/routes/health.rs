//! `GET /health/live` and `GET /health/ready`, on the API port and on the admin port (where
//! `GET /metrics` is: see `admin`).

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::state::AppState;

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "Alive", body = Object)))]
pub(crate) async fn live() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers. The broker is deliberately not checked: registration only
/// writes the outbox, so the user-service stays useful while RabbitMQ is down (the relay reports
/// the broker).
#[utoipa::path(get, path = "/health/ready", tag = "operations", responses(
    (status = 200, description = "Database reachable", body = Object),
    (status = 503, description = "Database unreachable", body = Object),
))]
pub(crate) async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match state.db.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "status": "ok", "database": "ok" })),
        ),
        Err(error) => {
            tracing::warn!(%error, "readiness check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "database": "unreachable" })),
            )
        }
    }
}
