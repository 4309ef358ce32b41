//! Reading a request body whole, within a size and a time bound ([`read_body`]): the APIs'
//! body-limit middleware calls it before any extractor, which then reads the buffered body.

use std::time::Duration;

use axum::{body::Body, extract::Request};

/// Why [`read_body`] gave up on a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The body did not arrive within the time bound (answered 408).
    TimedOut,
    /// The body is larger than the limit, or could not be read whole (answered 413).
    TooLarge,
}

/// `request` with its body read whole: at most `limit` bytes, within `timeout`.
///
/// The time bound covers the whole body, so a body trickled in byte by byte cannot hold a
/// connection slot until the request timeout. (tower-http's body timeout restarts with every
/// frame, so it does not bound a trickle.)
///
/// # Errors
/// [`BodyError::TimedOut`] after `timeout`; [`BodyError::TooLarge`] past `limit` or when the
/// body cannot be read.
pub async fn read_body(
    request: Request,
    limit: usize,
    timeout: Duration,
) -> Result<Request, BodyError> {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Err(_)) => Err(BodyError::TooLarge),
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, Body::from(bytes))),
    }
}
