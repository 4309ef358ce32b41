//! The request middleware of the API port, outermost first: a client's `x-request-id` kept only
//! if well-formed, the request id and trace span, security headers on every answer, request
//! metrics with bounded labels, load shedding past `MAX_CONCURRENT_REQUESTS`, the request
//! timeout, the per-client rate limits and the body limit.

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use common::http::{
    body::{BodyError, read_body},
    metrics::{RequestMetrics, method_label, record_request_metrics},
};
use tower::{
    BoxError, ServiceBuilder, limit::GlobalConcurrencyLimitLayer, load_shed::LoadShedLayer,
};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{error::ApiError, rate_limit, state::AppState};

/// Longest client-supplied `x-request-id` kept (it goes into logs and outbox headers).
const MAX_REQUEST_ID_LEN: usize = 64;

/// `http_requests_total` and `http_request_duration_seconds` by method, route and status.
const REQUEST_METRICS: RequestMetrics = RequestMetrics {
    requests_total: "http_requests_total",
    duration_seconds: "http_request_duration_seconds",
};

/// `routes` wrapped in the API middleware, with their state.
pub(crate) fn api(routes: Router<AppState>, state: AppState) -> Router {
    let request_id = HeaderName::from_static(common::trace::headers::REQUEST_ID);
    let timeout = state.settings.request_timeout;
    // One semaphore shared by every route (`Router::layer` applies the layer per route).
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: BoxError| async {
            ApiError::Overloaded
        }))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(
            state.settings.max_concurrent_requests,
        ));
    routes
        // The one body limit (size and time): extractors then read the buffered body.
        .layer(middleware::from_fn_with_state(state.clone(), read_body_in_time))
        // Inside the metrics layer: a refused request is counted as a 429 like any other.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit,
        ))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        // Outside the timeout: a shed request answers at once; inside the metrics: it is counted.
        .layer(shed)
        .layer(middleware::from_fn_with_state(
            REQUEST_METRICS,
            record_request_metrics,
        ))
        // if_not_present: a handler's own headers (the verify page's) win.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id = request
                .headers()
                .get(common::trace::headers::REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("http", method = %method_label(request.method()), path = %request.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(middleware::map_request(drop_malformed_request_id))
        .with_state(state)
}

/// Removes a client's `x-request-id` unless it is 1 to 64 characters of `[A-Za-z0-9._-]`, so
/// the request-id layer replaces it with a fresh one: it is echoed, logged and stored in outbox
/// headers, and must not carry log-injection text or kilobytes of junk.
async fn drop_malformed_request_id(mut request: Request) -> Request {
    let well_formed = request
        .headers()
        .get(common::trace::headers::REQUEST_ID)
        .map(|value| is_well_formed_request_id(value.as_bytes()));
    if well_formed == Some(false) {
        request
            .headers_mut()
            .remove(common::trace::headers::REQUEST_ID);
    }
    request
}

fn is_well_formed_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reads the whole request body within `HTTP_HEADER_READ_TIMEOUT` (408 `request_timeout`
/// otherwise) and at most `MAX_BODY_BYTES` (413): a body trickled in byte by byte would hold a
/// connection slot until `REQUEST_TIMEOUT`.
async fn read_body_in_time(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let settings = &state.settings;
    match read_body(
        request,
        settings.max_body_bytes,
        settings.http_header_read_timeout,
    )
    .await
    {
        Ok(request) => next.run(request).await,
        Err(BodyError::TimedOut) => ApiError::BodyTimeout.into_response(),
        Err(BodyError::TooLarge) => ApiError::PayloadTooLarge.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_short_and_plain() {
        for good in ["abc", "A-1.b_2", &"x".repeat(64)] {
            assert!(is_well_formed_request_id(good.as_bytes()), "{good}");
        }
        for bad in ["", &"x".repeat(65), "a b", "id\r\nforged: 1", "ünï", "a/b"] {
            assert!(!is_well_formed_request_id(bad.as_bytes()), "{bad:?}");
        }
    }
}
