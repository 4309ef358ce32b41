//! Middleware of the API port: the request body bound (size and time), the names of its
//! request metrics, and the headers every answer carries. The body read and the metrics
//! middleware are `common::http`'s, shared with the user-service.

use axum::{
    extract::{Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use common::http::{
    body::{BodyError, read_body},
    metrics::RequestMetrics,
};

use super::error::ApiError;
use crate::state::AppState;

/// Room for the JSON around a job's body, and for its escaping (a string body full of quotes
/// doubles when written as JSON).
const JSON_SLACK_BYTES: usize = 64 * 1024;

/// The largest request body the API reads: twice `WEBHOOK_MAX_BODY_BYTES` plus slack. The
/// job's own body is checked against `WEBHOOK_MAX_BODY_BYTES` exactly once it is parsed.
pub(crate) fn request_body_limit(max_body_bytes: usize) -> usize {
    max_body_bytes
        .saturating_mul(2)
        .saturating_add(JSON_SLACK_BYTES)
}

/// Reads the whole body within `HTTP_HEADER_READ_TIMEOUT` (408 `request_timeout`) and at most
/// [`request_body_limit`] bytes (413 `payload_too_large`), so a body trickled in byte by byte
/// cannot hold a connection slot, and no handler buffers more than the bound.
pub(crate) async fn read_body_in_time(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limit = request_body_limit(state.settings.webhook_max_body_bytes);
    match read_body(request, limit, state.settings.http_header_read_timeout).await {
        Ok(request) => next.run(request).await,
        Err(BodyError::TimedOut) => ApiError::BodyTimeout.into_response(),
        Err(BodyError::TooLarge) => ApiError::PayloadTooLarge.into_response(),
    }
}

/// `nosniff` and `no-store` on every answer: they carry secrets (endpoint secrets, notify
/// secrets) that no cache may keep.
pub(crate) async fn response_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `webhook_http_requests_total` and `webhook_http_request_duration_seconds` by method, route
/// and status (`common::http::metrics::record_request_metrics`).
pub(crate) const REQUEST_METRICS: RequestMetrics = RequestMetrics {
    requests_total: "webhook_http_requests_total",
    duration_seconds: "webhook_http_request_duration_seconds",
};
