//! Request metrics of an API, with bounded labels: a counter and a duration histogram by
//! method, route and status ([`record_request_metrics`], named per service by
//! [`RequestMetrics`]).

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};

/// The names of an API's two request metrics (each service has its own prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestMetrics {
    /// The counter, e.g. `http_requests_total`.
    pub requests_total: &'static str,
    /// The histogram of seconds, e.g. `http_request_duration_seconds`.
    pub duration_seconds: &'static str,
}

/// Middleware (`axum::middleware::from_fn_with_state(metrics, record_request_metrics)`)
/// that counts every request and records its duration, by method, route and status.
///
/// The route is the matched route template (`unmatched` when none matched), never the path,
/// and the method is [`method_label`]: a client cannot create time series at will.
pub async fn record_request_metrics(
    State(metrics): State<RequestMetrics>,
    request: Request,
    next: Next,
) -> Response {
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
    metrics::counter!(metrics.requests_total, &labels).increment(1);
    metrics::histogram!(metrics.duration_seconds, &labels).record(started.elapsed().as_secs_f64());
    response
}

/// The method as a metrics label: one of the known methods, else `other` (a client can send any
/// token as a method; each would be a new time series).
pub fn method_label(method: &Method) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        let custom = Method::from_bytes(b"FOOBAR").unwrap();
        assert_eq!(method_label(&custom), "other");
        assert_eq!(method_label(&Method::TRACE), "other");
    }
}
