//! `GET /user/verify?token=…`: the confirmation page behind the mailed link, and the HTML pages
//! that answer its form post. A GET never consumes the token (mail scanners prefetch links); the
//! page's button POSTs it to `/user/verify`. The page says when the sign-up was made, so someone
//! who did not sign up can tell and walk away.

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::Deserialize;

use super::{VerifyOutcome, find_by_token, link_outcome};
use crate::{
    error::ApiError,
    pages::{ALREADY_VERIFIED, Outcome, VERIFIED},
    state::AppState,
};

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
        // The token is 64 hex characters here (checked by find_by_token); escaped anyway.
        (Ok(VerifyOutcome::Verified), Some(registered_at)) => {
            let deleted_at = chrono::Duration::from_std(state.settings.pending_account_ttl)
                .ok()
                .and_then(|ttl| registered_at.checked_add_signed(ttl))
                .map(|at| at.format(TIME_FORMAT).to_string());
            state.pages.page(
                StatusCode::OK,
                "confirm.html",
                minijinja::context! {
                    title => "Confirm your email address",
                    token,
                    registered_at => registered_at.format(TIME_FORMAT).to_string(),
                    deleted_at,
                },
            )
        }
        (other, _) => outcome_page(&state, other),
    }
}

/// How times are shown on the pages (UTC, like the mails).
const TIME_FORMAT: &str = "%Y-%m-%d %H:%M UTC";

/// The page answering a link confirmation (the GET page's, or its form post's).
pub(crate) fn outcome_page(state: &AppState, result: Result<VerifyOutcome, ApiError>) -> Response {
    let pages = &state.pages;
    match result {
        Ok(VerifyOutcome::Verified) => pages.outcome(StatusCode::OK, &VERIFIED),
        Ok(VerifyOutcome::AlreadyVerified) => pages.outcome(StatusCode::OK, &ALREADY_VERIFIED),
        Err(error @ ApiError::VerificationExpired) => pages.outcome(
            error.status(),
            &Outcome {
                kind: "expired",
                title: "This link has expired",
                paragraphs: &["This verification link has expired. Request a new verification mail."],
                next_href: Some("/signup/check"),
                next_label: Some("Get a new mail"),
            },
        ),
        Err(error @ (ApiError::Internal(_) | ApiError::Unavailable(_))) => error.into_response(),
        Err(error) => pages.outcome(
            error.status(),
            &Outcome {
                kind: "invalid",
                title: "This link is not valid",
                paragraphs: &["This verification link is not valid, or a newer mail replaced it. Use the link in the most recent mail, or request a new one."],
                next_href: Some("/signup/check"),
                next_label: Some("Get a new mail"),
            },
        ),
    }
}
