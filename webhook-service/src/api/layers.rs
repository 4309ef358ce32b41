//! Middleware of the API port: the request body bound (size and time), request metrics with
//! bounded labels, and the headers every answer carries.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
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
    let (parts, body) = request.into_parts();
    let limit = request_body_limit(state.settings.webhook_max_body_bytes);
    let read = axum::body::to_bytes(body, limit);
    match tokio::time::timeout(state.settings.http_header_read_timeout, read).await {
        Err(_) => ApiError::BodyTimeout.into_response(),
        Ok(Err(_)) => ApiError::PayloadTooLarge.into_response(),
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
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
/// and status.
pub(crate) async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("webhook_http_requests_total", &labels).increment(1);
    metrics::histogram!("webhook_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a metrics label: a client may send any token as a method, and each would be
/// a new time series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
