//! `GET /user/verify?token=…`: the confirmation page behind the mailed link, and the HTML pages
//! that answer its form post. A GET never consumes the token (mail scanners prefetch links); the
//! page's button POSTs it to `/user/verify`. The page says when the sign-up was made, so someone
//! who did not sign up can tell and walk away.

use axum::{
    extract::{Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{VerifyOutcome, find_by_token, link_outcome};
use crate::{error::ApiError, state::AppState};

/// `?token=` of the GET link.
#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

/// `GET /user/verify?token=…`: a page whose button POSTs the confirmation. Never consumes.
#[utoipa::path(
    get,
    path = "/user/verify",
    tag = "verification",
    params(TokenQuery),
    responses(
        (status = 200, description = "Confirmation page (or: already verified)", content_type = "text/html", body = String),
        (status = 404, description = "Invalid or replaced link", content_type = "text/html", body = String),
        (status = 410, description = "Expired link", content_type = "text/html", body = String),
    )
)]
pub(crate) async fn verify_page(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
) -> Response {
    let token = query.token.unwrap_or_default();
    let mut registered_at = None;
    let result = async {
        let Some((found, user)) = find_by_token(&state.db, &token).await? else {
            return Err(ApiError::InvalidToken);
        };
        registered_at = Some(user.created_at);
        link_outcome(&found, &user, Utc::now(), state.settings.max_code_attempts)
    }
    .await;
    match (result, registered_at) {
        // The token is 64 hex characters here (checked by find_by_token): safe to embed.
        (Ok(VerifyOutcome::Verified), Some(registered_at)) => page(
            StatusCode::OK,
            "Confirm your email address",
            &format!(
                "<p>Press the button to confirm your email address.</p>\
                 {}\
                 <form method=\"post\" action=\"/user/verify\">\
                 <input type=\"hidden\" name=\"token\" value=\"{token}\">\
                 <button type=\"submit\">Confirm my email address</button></form>",
                sign_up_notice(registered_at, state.settings.pending_account_ttl)
            ),
        ),
        (other, _) => outcome_page(other),
    }
}

/// When the sign-up was made, and what happens if it was not the reader: someone else may have
/// typed this address, and confirming would hand them an account on it.
fn sign_up_notice(registered_at: DateTime<Utc>, pending_account_ttl: Duration) -> String {
    let deleted_at = chrono::Duration::from_std(pending_account_ttl)
        .ok()
        .and_then(|ttl| registered_at.checked_add_signed(ttl));
    let deletion = deleted_at.map_or_else(String::new, |at| {
        format!(" Unconfirmed, it is deleted on {}.", at.format(TIME_FORMAT))
    });
    format!(
        "<p>This address was used to sign up on {}. If that was not you, do not press the \
         button: close this page and nothing happens.{deletion}</p>",
        registered_at.format(TIME_FORMAT)
    )
}

/// How times are shown on the pages (UTC, like the mails).
const TIME_FORMAT: &str = "%Y-%m-%d %H:%M UTC";

pub(crate) fn outcome_page(result: Result<VerifyOutcome, ApiError>) -> Response {
    match result {
        Ok(VerifyOutcome::Verified) => page(
            StatusCode::OK,
            "Email address verified",
            "<p>Thank you, your email address is verified. You can close this page.</p>",
        ),
        Ok(VerifyOutcome::AlreadyVerified) => page(
            StatusCode::OK,
            "Already verified",
            "<p>Your email address was already verified. Nothing more to do.</p>",
        ),
        Err(error @ ApiError::VerificationExpired) => page(
            error.status(),
            "This link has expired",
            "<p>This verification link has expired. Request a new verification mail.</p>",
        ),
        Err(error @ (ApiError::Internal(_) | ApiError::Unavailable(_))) => error.into_response(),
        Err(error) => page(
            error.status(),
            "This link is not valid",
            "<p>This verification link is not valid, or a newer mail replaced it. \
             Use the link in the most recent mail, or request a new one.</p>",
        ),
    }
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head><body><main><h1>{title}</h1>{body}</main></body></html>"
    );
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        Html(html),
    )
        .into_response()
}
