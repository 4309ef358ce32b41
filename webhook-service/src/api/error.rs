//! `ApiError`: every failure of the API, mapped to a status and the project's one JSON error
//! shape, `{"error": {"code": "...", "message": "...", "details"?: {...}}}`. The shape
//! ([`ErrorBody`]) and the reading of JSON body rejections are `common::http::error`'s, shared
//! with the user-service; the variants and their codes are this service's.
//!
//! A 500 tells the client nothing internal; its cause chain is logged once, here.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
pub(crate) use common::http::error::ErrorBody;
use common::http::error::JsonBodyError;
use sea_orm::DbErr;
use serde_json::{Value, json};

/// Problems found in a request, by field (`request.url`, `headers.x-a`, …), collected so one
/// answer names every bad field.
#[derive(Debug, Default)]
pub(crate) struct FieldErrors(BTreeMap<String, Vec<Value>>);

impl FieldErrors {
    /// Records a problem of `field`.
    pub(crate) fn add(&mut self, field: impl Into<String>, code: &str, message: impl Into<String>) {
        self.0
            .entry(field.into())
            .or_default()
            .push(json!({ "code": code, "message": message.into() }));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded, else [`ApiError::Validation`].
    ///
    /// # Errors
    /// [`ApiError::Validation`] naming every recorded field.
    pub(crate) fn into_result<T>(self, value: T) -> Result<T, ApiError> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self.into())
        }
    }

    /// The `details` object.
    pub(crate) fn to_value(&self) -> Value {
        json!(self.0)
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> Self {
        Self::Validation(errors.to_value())
    }
}

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("expected a request with `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// Past the API's request size limit (`WEBHOOK_MAX_BODY_BYTES` plus room for JSON).
    #[error("request body is too large")]
    PayloadTooLarge,
    /// The body did not arrive within `HTTP_HEADER_READ_TIMEOUT`.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// Valid JSON that breaks the rules; `details` maps each field to its problems.
    #[error("the request is invalid")]
    Validation(Value),
    /// A job's request body is larger than `WEBHOOK_MAX_BODY_BYTES`.
    #[error("the job's request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// `WEBHOOK_MAX_BODY_BYTES`.
        limit: usize,
    },
    /// A header the API understands has an unusable value.
    #[error("invalid header {name}: {reason}")]
    InvalidHeader {
        name: &'static str,
        reason: &'static str,
    },
    /// No bearer token, or not the configured one.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// An unknown id (or route).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The job has already finished (or was cancelled).
    #[error("the job is no longer pending")]
    NotPending,
    /// An attempt is in flight: the target is being called; cancel once it has ended.
    #[error("an attempt is in flight; retry once it has ended")]
    InFlight,
    /// The message is already waiting for (or in) an attempt.
    #[error("the message is already pending")]
    AlreadyPending,
    /// The endpoint is disabled: enable it before replaying to it.
    #[error("the endpoint is disabled; enable it first")]
    EndpointDisabled,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// The database cannot be reached: 503 with `Retry-After`.
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable(#[source] anyhow::Error),
    /// Anything unexpected. Logged with its cause chain, answered as an opaque 500.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Seconds a client is asked to wait while the database is unreachable.
const RETRY_AFTER_SECONDS: u32 = 5;

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::InvalidHeader { .. } => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Validation(_) | Self::BodyTooLarge { .. } | Self::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::NotPending | Self::InFlight | Self::AlreadyPending | Self::EndpointDisabled => {
                StatusCode::CONFLICT
            }
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code of this error.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::BodyTimeout => "request_timeout",
            Self::Validation(_) => "validation_failed",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::InvalidHeader { .. } => "invalid_header",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::NotPending => "not_pending",
            Self::InFlight => "in_flight",
            Self::AlreadyPending => "already_pending",
            Self::EndpointDisabled => "endpoint_disabled",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::Unavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            Self::Validation(details) => Some(details.clone()),
            Self::BodyTooLarge { limit } => {
                let mut errors = FieldErrors::default();
                errors.add(
                    "request.body",
                    "too_large",
                    format!("must be at most {limit} bytes"),
                );
                Some(errors.to_value())
            }
            _ => None,
        }
    }

    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string(), self.details())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
            }
            Self::Unavailable(cause) => {
                tracing::warn!(
                    error = format!("{cause:#}"),
                    "database unreachable; answering 503"
                );
                return (
                    self.status(),
                    [(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())],
                    Json(self.body()),
                )
                    .into_response();
            }
            Self::Unauthorized => {
                return (
                    self.status(),
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    Json(self.body()),
                )
                    .into_response();
            }
            _ => {}
        }
        (self.status(), Json(self.body())).into_response()
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

impl From<PathRejection> for ApiError {
    /// Every id is a UUID: a path segment that is not one names nothing.
    fn from(_: PathRejection) -> Self {
        Self::NotFound("resource")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Validation(json!({
            "query": [{ "code": "invalid_query", "message": rejection.body_text() }]
        }))
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct ApiJson<T>(pub(crate) T);

/// `Path<T>` whose rejections are [`ApiError`]s (404 `not_found`).
#[derive(Debug, Clone, Copy, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct ApiPath<T>(pub(crate) T);

/// `Query<T>` whose rejections are [`ApiError`]s (422 `validation_failed`).
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct ApiQuery<T>(pub(crate) T);

/// Whether `error` is a unique-index violation (a concurrent insert won).
pub(crate) fn is_unique_violation(error: &DbErr) -> bool {
    matches!(
        error.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}
