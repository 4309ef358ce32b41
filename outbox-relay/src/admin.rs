//! The admin port: `GET /health/live`, `GET /health/ready` (database reachable and broker
//! connected) and `GET /metrics` (Prometheus, with the backlog gauges sampled at scrape time).

use std::sync::Arc;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde_json::json;

use crate::relay::Relay;

/// The admin routes.
pub(crate) fn router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(relay)
}

/// 503 when a pipeline has been stuck in one batch for longer than `RELAY_STALL_TIMEOUT` (a
/// hung query or publish): restarting is the remedy, its rows stay pending and are republished.
async fn live(State(relay): State<Arc<Relay>>) -> impl IntoResponse {
    match relay.stalled_for() {
        None => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Some(stalled) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "stalled", "stalled_for_seconds": stalled.as_secs() })),
        ),
    }
}

/// 200 only when the database answers and the broker connection is open.
async fn ready(State(relay): State<Arc<Relay>>) -> impl IntoResponse {
    let database = relay.db().ping().await.is_ok();
    let broker = relay.broker().is_connected();
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(json!({
            "status": word(database && broker),
            "database": word(database),
            "broker": word(broker),
        })),
    )
}

/// Samples the backlog (two indexed queries), then renders every metric of the process.
async fn metrics(State(relay): State<Arc<Relay>>) -> impl IntoResponse {
    match outbox::backlog(relay.db()).await {
        Ok(backlog) => {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("outbox_relay_backlog").set(backlog.pending as f64);
            let age = backlog.oldest_created_at.map_or(0.0, |created| {
                (chrono::Utc::now() - created).as_seconds_f64().max(0.0)
            });
            metrics::gauge!("outbox_relay_oldest_unpublished_age_seconds").set(age);
        }
        Err(error) => tracing::debug!(%error, "cannot sample the outbox backlog"),
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        common::telemetry::metrics().render(),
    )
}
