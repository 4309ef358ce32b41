//! The one JSON error shape of the HTTP APIs, `{"error": {"code", "message", "details"?}}`
//! ([`ErrorBody`]), and what a refused JSON request body means in it ([`JsonBodyError`]).
//!
//! Each service keeps its own `ApiError`: its variants, codes, statuses and headers are its
//! own; only the shape and the reading of axum's JSON rejections are shared, so every API
//! answers a bad body the same way.

use axum::{extract::rejection::JsonRejection, http::StatusCode};
use serde_json::{Value, json};

/// `{"error": {...}}`: the body of every error response.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// The body of an error with this code, message and optional details.
    pub fn new(code: &str, message: String, details: Option<Value>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                details,
            },
        }
    }
}

/// Code, message and optional details of an error.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `validation_failed`.
    #[schema(example = "validation_failed")]
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Per-field problems (`validation_failed`, or another code about fields):
    /// `{field: [{code, message}]}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

/// A JSON request body axum's `Json` refused, as the error an API answers with.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonBodyError {
    /// Not JSON (or unreadable): `malformed_json`, with the parser's explanation.
    Malformed(String),
    /// No `Content-Type: application/json`: `unsupported_media_type`.
    UnsupportedMediaType,
    /// Past the body limit: `payload_too_large`.
    TooLarge,
    /// JSON of the wrong shape (a missing field, a wrong type): `validation_failed`, with
    /// these details (`{"body": [{"code": "invalid_shape", "message"}]}`).
    Invalid(Value),
}

impl From<JsonRejection> for JsonBodyError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => Self::Invalid(json!({
                "body": [{ "code": "invalid_shape", "message": e.body_text() }]
            })),
            JsonRejection::JsonSyntaxError(e) => Self::Malformed(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::TooLarge,
            other => Self::Malformed(other.body_text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_left_out_when_there_are_none() {
        let body = ErrorBody::new("not_found", "no such endpoint".into(), None);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"error": {"code": "not_found", "message": "no such endpoint"}})
        );
        let details = json!({"email": [{"code": "email", "message": "invalid"}]});
        let body = ErrorBody::new("validation_failed", "invalid".into(), Some(details.clone()));
        assert_eq!(
            serde_json::to_value(&body).unwrap()["error"]["details"],
            details
        );
    }
}
