//! Bearer-token access to `/v1/…`: `Authorization: Bearer <WEBHOOK_API_TOKEN>`.
//!
//! Both tokens are hashed (SHA-256) before the constant-time comparison, so neither the time
//! nor an early length mismatch tells a client how much of its guess was right. Without a
//! configured token, settings force a loopback `HTTP_ADDR` and a request passes only when its
//! `Host` names the loopback (`localhost`, `127.0.0.1`, `[::1]`): a web page whose name an
//! attacker re-binds to 127.0.0.1 (DNS rebinding) sends its own name and is refused.

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
        return if names_loopback(request.headers().get(header::HOST)) {
            next.run(request).await
        } else {
            ApiError::Unauthorized.into_response()
        };
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

/// The `Host` header names the loopback interface (any port).
fn names_loopback(host: Option<&header::HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(address, _)| address),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
    fn without_a_token_only_a_loopback_host_passes() {
        let host = |h: &'static str| Some(header::HeaderValue::from_static(h));
        for ok in [
            "127.0.0.1:8090",
            "localhost:8090",
            "LOCALHOST",
            "[::1]:8090",
            "127.0.0.2",
        ] {
            assert!(names_loopback(host(ok).as_ref()), "{ok}");
        }
        for refused in [
            "evil.example:8090",
            "127.0.0.1.evil.example",
            "[::2]:1",
            "",
            "10.0.0.1",
        ] {
            assert!(!names_loopback(host(refused).as_ref()), "{refused}");
        }
        assert!(!names_loopback(None));
    }

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
