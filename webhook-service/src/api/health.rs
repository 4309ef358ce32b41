//! `GET /health/live`, `GET /health/ready` and `GET /metrics`: no token needed.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::state::AppState;

/// Liveness: 503 when the event consumer loop has been neither consuming nor reconnecting for
/// longer than its stall timeout: it is stuck, and restarting the process is the remedy (the
/// broker redelivers what it held; the message table recognises what was stored).
#[utoipa::path(get, path = "/health/live", tag = "operations", responses(
    (status = 200, description = "Alive", body = Object),
    (status = 503, description = "The event consumer is stuck", body = Object),
))]
pub(crate) async fn live(State(state): State<AppState>) -> impl IntoResponse {
    let now = tokio::time::Instant::now();
    match state
        .consumer
        .stalled_for(now, crate::consumer::CONSUMER_STALL_TIMEOUT)
    {
        None => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Some(stalled) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "stalled", "stalled_for_seconds": stalled.as_secs() })),
        ),
    }
}

/// Readiness: the database answers and the broker connection is up; else 503 naming what is
/// down.
#[utoipa::path(get, path = "/health/ready", tag = "operations", responses(
    (status = 200, description = "Database and broker reachable", body = Object),
    (status = 503, description = "`database` or `broker` is `unreachable`", body = Object),
))]
pub(crate) async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let database = state.db.ping().await.is_ok();
    let broker = state.broker.is_connected();
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let status = if database && broker {
        StatusCode::OK
    } else {
        tracing::warn!(database, broker, "readiness check failed");
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ok" } else { "unavailable" },
            "database": word(database),
            "broker": word(broker),
        })),
    )
}

/// Prometheus metrics of the process.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics() -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        common::telemetry::metrics().render(),
    )
}
