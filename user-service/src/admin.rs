//! The admin port (`ADMIN_ADDR`), like the relay's and the email-service's:
//! `GET /health/live`, `GET /health/ready` and `GET /metrics`. The metrics live here, not on the
//! public API port: the resend and verification counters would tell anyone which addresses have
//! accounts. No load shedding here, so an orchestrator's probes still answer under overload.

use axum::{Router, response::IntoResponse, routing::get};

use crate::{routes::health, state::AppState};

/// The admin routes.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Prometheus text exposition of every metric of the process.
async fn metrics() -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        common::telemetry::metrics().render(),
    )
}
