//! One request/response exchange under the attempt's deadline: sending, reading the head and
//! at most [`MAX_RESPONSE_BODY`] bytes of the body, and classifying a failure by its cause.

use std::{
    error::Error as StdError,
    time::{Duration, SystemTime},
};

use reqwest::header::HeaderMap;

use super::{
    ErrorKind, Failure, MAX_RESPONSE_BODY,
    guard::{Blocked, DnsFailed},
};

/// The response headers kept in an attempt record.
const KEPT_RESPONSE_HEADERS: [&str; 5] = [
    "content-type",
    "retry-after",
    "location",
    "content-length",
    "x-request-id",
];

/// A kept response header value is cut to this many bytes.
const MAX_HEADER_VALUE: usize = 1024;

/// The answer of an attempt.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) retry_after: Option<Duration>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

/// Sends, reads the head and at most [`MAX_RESPONSE_BODY`] bytes, all before `deadline`.
pub(super) async fn exchange(
    request: reqwest::RequestBuilder,
    deadline: tokio::time::Instant,
) -> Result<Answer, Failure> {
    let mut response = match tokio::time::timeout_at(deadline, request.send()).await {
        Err(_) => return Err((ErrorKind::Timeout, "no answer within the timeout".into())),
        Ok(Err(error)) => return Err(classify(error)),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    let headers = kept_headers(response.headers());
    let retry_after = match status {
        429 | 503 => response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now())),
        _ => None,
    };
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BODY {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let room = MAX_RESPONSE_BODY - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            // The end, a broken body or the deadline: keep what arrived.
            Ok(Ok(None) | Err(_)) | Err(_) => break,
        }
    }
    // Dropping the response unread closes its connection instead of draining the rest.
    drop(response);
    Ok(Answer {
        status,
        retry_after,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The kind of a failed send, and its cause chain as text from the cause that decided the
/// kind (without the URL, which may carry credentials).
fn classify(error: reqwest::Error) -> Failure {
    let error = error.without_url();
    let causes = causes(&error);
    let decisive = causes.iter().enumerate().find_map(|(index, cause)| {
        let kind = if cause.is::<Blocked>() {
            ErrorKind::Blocked
        } else if cause.is::<DnsFailed>() {
            ErrorKind::Dns
        } else if cause.is::<rustls::Error>() {
            ErrorKind::Tls
        } else {
            return None;
        };
        Some((kind, index))
    });
    let (kind, first) = decisive.unwrap_or(if error.is_timeout() {
        (ErrorKind::Timeout, 0)
    } else if error.is_connect() {
        (ErrorKind::Connect, 0)
    } else if error.is_builder() {
        (ErrorKind::InvalidRequest, 0)
    } else {
        (ErrorKind::Other, 0)
    });
    let mut messages: Vec<String> = Vec::new();
    for cause in &causes[first..] {
        let message = cause.to_string();
        // An `io::Error` prints its payload's message: say it once.
        if !messages.iter().any(|known| known.contains(&message)) {
            messages.push(message);
        }
    }
    (kind, messages.join(": "))
}

/// `error` and everything it wraps: its `source`s, and the payload of an `io::Error` (which
/// does not report its payload as its source; hyper-rustls wraps the rustls error in two).
fn causes<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut all = Vec::new();
    let mut next = Some(error);
    while let Some(current) = next {
        all.push(current);
        next = match current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(payload) => Some(payload as &(dyn StdError + 'static)),
            None => current.source(),
        };
    }
    all
}

fn kept_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    KEPT_RESPONSE_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?;
            let bytes = value.as_bytes();
            let value = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_HEADER_VALUE)]);
            Some(((*name).to_owned(), value.into_owned()))
        })
        .collect()
}

/// `Retry-After` as a delay from `now`: delta-seconds or an HTTP date (a past date is zero).
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}
