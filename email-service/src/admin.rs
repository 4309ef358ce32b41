//! The admin endpoint: `GET /health/live`, `GET /health/ready` (broker connected, inbox
//! database reachable, mail server not paused by the circuit breaker, else 503) and
//! `GET /metrics` (Prometheus text, with the dead-letter queue's depth sampled at scrape time).

use std::sync::Arc;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use common::{amqp::Broker, consumer::ConsumerHealth};

use crate::mailer::Breaker;
use sea_orm::DatabaseConnection;
use serde_json::json;

/// What readiness looks at.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) db: DatabaseConnection,
    /// The broker connection the consumer uses.
    pub(crate) broker: Arc<Broker>,
    /// The consumer loop's progress (liveness).
    pub(crate) consumer: Arc<ConsumerHealth>,
    /// The mail server's circuit breaker.
    pub(crate) smtp: Arc<Breaker>,
    /// `CONSUMER_STALL_TIMEOUT`.
    pub(crate) stall_timeout: std::time::Duration,
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// 503 when the consumer loop has been neither consuming nor reconnecting for longer than
/// `CONSUMER_STALL_TIMEOUT`: it is stuck, and restarting the process is the remedy (the broker
/// redelivers what it held, the inbox recognises what was sent).
async fn live(State(state): State<AdminState>) -> impl IntoResponse {
    let now = tokio::time::Instant::now();
    match state.consumer.stalled_for(now, state.stall_timeout) {
        None => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Some(stalled) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "stalled", "stalled_for_seconds": stalled.as_secs() })),
        ),
    }
}

/// 200 when the broker is connected, the inbox database answers and the mail server is not
/// paused by the circuit breaker; else 503 naming what is down.
async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    let broker = state.broker.is_connected();
    let database = state.db.ping().await.is_ok();
    let smtp = !state.smtp.is_open();
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let status = if broker && database && smtp {
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
            "smtp": if smtp { "ok" } else { "unavailable" },
        })),
    )
}

/// How long a scrape waits for the dead-letter queue's depth before rendering without it.
const DLQ_SAMPLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Samples the dead-letter queue's depth (while the broker is connected: a scrape never
/// connects it), then renders every metric of the process. A failed sample leaves the last
/// value, and says why at debug level.
async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    if state.broker.is_connected() {
        match tokio::time::timeout(DLQ_SAMPLE_TIMEOUT, dead_letter_depth(&state.broker)).await {
            Ok(Ok(depth)) => {
                metrics::gauge!("email_dead_letter_queue_messages").set(f64::from(depth));
            }
            Ok(Err(error)) => {
                tracing::debug!(error = format!("{error:#}"), "cannot sample the DLQ depth");
            }
            Err(_) => tracing::debug!("sampling the DLQ depth timed out"),
        }
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        common::telemetry::metrics().render(),
    )
}

/// Messages ready in the dead-letter queue: a passive declare on a short-lived channel.
async fn dead_letter_depth(broker: &Broker) -> anyhow::Result<u32> {
    use anyhow::Context as _;
    let channel = broker.channel().await?;
    let queue = channel
        .queue_declare(
            broker.topology().email_dlq.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..lapin::options::QueueDeclareOptions::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .context("declaring the DLQ passively");
    let _ = channel.close(200, "DLQ depth sampled".into()).await;
    Ok(queue?.message_count())
}
