//! The admin endpoint: `GET /health/live`, `GET /health/ready` (broker connected and inbox
//! database reachable, else 503) and `GET /metrics` (Prometheus text).

use std::sync::Arc;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use common::amqp::Broker;
use sea_orm::DatabaseConnection;
use serde_json::json;

/// What readiness looks at.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) db: DatabaseConnection,
    /// The broker connection the consumer uses.
    pub(crate) broker: Arc<Broker>,
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn live() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    let broker = state.broker.is_connected();
    let database = state.db.ping().await.is_ok();
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let status = if broker && database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ok" } else { "unavailable" },
            "broker": word(broker),
            "database": word(database),
        })),
    )
}

async fn metrics() -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        common::telemetry::metrics().render(),
    )
}
