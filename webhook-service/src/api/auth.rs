//! Bearer-token access to `/v1/…`: `Authorization: Bearer <WEBHOOK_API_TOKEN>`.
//!
//! Both tokens are hashed (SHA-256) before the constant-time comparison, so neither the time
//! nor an early length mismatch tells a client how much of its guess was right. Without a
//! configured token every request passes: settings then force a loopback `HTTP_ADDR`.

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::{settings::ApiToken, state::AppState};

/// Middleware: 401 `unauthorized` (with `WWW-Authenticate: Bearer`) unless the request carries
/// the configured token.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(ApiToken(expected)) = &state.settings.webhook_api_token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    if given.is_some_and(|given| tokens_match(given, expected)) {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// The token of a `Bearer <token>` credential (the scheme is case-insensitive, RFC 9110).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

fn tokens_match(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    given.ct_eq(&expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_credential_with_the_exact_token_matches() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert!(tokens_match("secret-token", "secret-token"));
        assert!(!tokens_match("secret-toke", "secret-token"));
        assert!(!tokens_match("", "secret-token"));
    }
}
