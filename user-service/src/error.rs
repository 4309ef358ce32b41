//! `ApiError`: every failure of the HTTP API, mapped to a status and one stable JSON shape:
//! `{"error": {"code": "...", "message": "...", "details"?: {...}}}`.
//!
//! The shape ([`ErrorBody`]) and the reading of JSON body rejections are `common::http::error`'s,
//! shared with the webhook-service; the variants and their codes are this service's.
//!
//! A 500 tells the client nothing internal; its full cause chain is logged once, here.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
pub(crate) use common::http::error::ErrorBody;
use common::http::error::JsonBodyError;
use sea_orm::DbErr;
use serde_json::{Value, json};

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body is not `application/json`.
    #[error("expected a request with `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// The body is larger than `MAX_BODY_BYTES`.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// Valid JSON that breaks the request rules; `details` maps each field to its problems.
    #[error("the request is invalid")]
    Validation(Value),
    /// A header the endpoint understands has an unusable value.
    #[error("invalid header {name}: {reason}")]
    InvalidHeader {
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// The verification token is unknown, superseded or already used by someone else.
    #[error("this verification link is invalid or was replaced by a newer one")]
    InvalidToken,
    /// The code cannot verify the address: wrong, expired, locked after too many wrong codes,
    /// or no pending verification for the address. One answer for all of them, so it does not
    /// tell whether an address has an account or in which state.
    #[error(
        "the code is not correct or no longer valid; request a new verification mail if needed"
    )]
    InvalidCode,
    /// Not a valid phone number (or a national format without `PHONE_DEFAULT_REGION`).
    #[error("not a valid phone number; use the international format, e.g. +447400123456")]
    InvalidPhone,
    /// A number type SMS codes are not sent to (premium-rate, VoIP, …).
    #[error("verification codes cannot be sent to this type of phone number")]
    PhoneTypeNotAllowed,
    /// A region not in `SMS_ALLOWED_COUNTRIES`.
    #[error("verification codes cannot be sent to phone numbers of this country")]
    PhoneCountryNotAllowed,
    /// The verification expired: a new one must be requested.
    #[error("this verification has expired; request a new verification mail")]
    VerificationExpired,
    /// The client (or its network) sent more requests than its rate limit allows.
    #[error("too many requests; retry later")]
    RateLimited {
        /// Seconds until a request would be accepted (`Retry-After`).
        retry_after: u64,
    },
    /// Too much work at once: every password hashing slot stayed busy for
    /// `HASH_QUEUE_TIMEOUT`, or `MAX_CONCURRENT_REQUESTS` requests are already in progress. 503
    /// with `Retry-After`, at once, instead of a queue that grows until the request times out.
    #[error("the service is overloaded; retry later")]
    Overloaded,
    /// The request body did not arrive within `HTTP_HEADER_READ_TIMEOUT` (a client trickling
    /// it would hold a connection slot).
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// The database cannot be reached (or went away mid-request, e.g. a restart): 503 with
    /// `Retry-After`. The request was most likely not applied; a connection lost during the
    /// commit leaves that open, which is what `Idempotency-Key` on registration is for.
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable(#[source] anyhow::Error),
    /// Anything unexpected. Logged with its cause chain, answered as an opaque 500.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Seconds a client is asked to wait (`Retry-After`) while the database is unreachable: about
/// what the connection pool needs to notice it is back.
const RETRY_AFTER_SECONDS: u32 = 5;

/// Seconds an overloaded client is asked to wait (`Retry-After`): a few hashes' worth.
pub(crate) const OVERLOADED_RETRY_AFTER_SECONDS: u32 = 1;

impl From<crate::password::HashError> for ApiError {
    fn from(error: crate::password::HashError) -> Self {
        match error {
            crate::password::HashError::Overloaded => Self::Overloaded,
            crate::password::HashError::Failed(error) => error.into(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        if common::database::any_cause_unreachable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Internal(error)
        }
    }
}

impl From<DbErr> for ApiError {
    fn from(error: DbErr) -> Self {
        anyhow::Error::from(error).into()
    }
}

/// Whether an outage warning may be logged now (at most one per 10 s across the process).
fn outage_warning_due() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_WARNING: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let last = LAST_WARNING.load(Ordering::Relaxed);
    now >= last.saturating_add(10)
        && LAST_WARNING
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::InvalidHeader { .. } | Self::InvalidCode => {
                StatusCode::BAD_REQUEST
            }
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Validation(_)
            | Self::IdempotencyKeyReused
            | Self::InvalidPhone
            | Self::PhoneTypeNotAllowed
            | Self::PhoneCountryNotAllowed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::EmailTaken => StatusCode::CONFLICT,
            Self::InvalidToken => StatusCode::NOT_FOUND,
            Self::VerificationExpired => StatusCode::GONE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code of this error.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Validation(_) => "validation_failed",
            Self::InvalidHeader { .. } => "invalid_header",
            Self::EmailTaken => "email_taken",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::InvalidToken => "invalid_token",
            Self::InvalidCode => "invalid_code",
            Self::VerificationExpired => "verification_expired",
            Self::InvalidPhone => "invalid_phone",
            Self::PhoneTypeNotAllowed => "phone_type_not_allowed",
            Self::PhoneCountryNotAllowed => "phone_country_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "service_unavailable",
            Self::Overloaded => "overloaded",
            Self::BodyTimeout => "request_timeout",
            Self::Internal(_) => "internal_error",
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            Self::Validation(details) => Some(details.clone()),
            _ => None,
        }
    }

    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string(), self.details())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The one place the cause chain is logged; the client sees only the code.
        match &self {
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
            }
            Self::Unavailable(cause) => {
                // Every request fails the same way during an outage: warn at most every 10 s.
                if outage_warning_due() {
                    tracing::warn!(
                        error = format!("{cause:#}"),
                        "database unreachable; answering 503"
                    );
                } else {
                    tracing::debug!(error = format!("{cause:#}"), "database unreachable");
                }
                return (
                    self.status(),
                    [(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())],
                    Json(self.body()),
                )
                    .into_response();
            }
            Self::Overloaded => {
                return (
                    self.status(),
                    [(
                        header::RETRY_AFTER,
                        OVERLOADED_RETRY_AFTER_SECONDS.to_string(),
                    )],
                    Json(self.body()),
                )
                    .into_response();
            }
            Self::RateLimited { retry_after } => {
                return (
                    self.status(),
                    [(header::RETRY_AFTER, retry_after.to_string())],
                    Json(self.body()),
                )
                    .into_response();
            }
            _ => {}
        }
        (self.status(), Json(self.body())).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match JsonBodyError::from(rejection) {
            JsonBodyError::Malformed(reason) => Self::MalformedJson(reason),
            JsonBodyError::UnsupportedMediaType => Self::UnsupportedMediaType,
            JsonBodyError::TooLarge => Self::PayloadTooLarge,
            JsonBodyError::Invalid(details) => Self::Validation(details),
        }
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s, so malformed bodies get the common error shape.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// Turns `validator` errors into `details`: `{field: [{code, message}]}`.
pub(crate) fn validation_details(errors: &validator::ValidationErrors) -> Value {
    let fields: serde_json::Map<String, Value> = errors
        .field_errors()
        .into_iter()
        .map(|(field, errors)| {
            let list = errors
                .iter()
                .map(|e| {
                    json!({
                        "code": e.code,
                        "message": e.message.as_deref().map_or_else(|| e.code.to_string(), str::to_owned),
                    })
                })
                .collect();
            (field.to_string(), Value::Array(list))
        })
        .collect();
    Value::Object(fields)
}
