//! The check-your-inbox page (`GET /signup/check?email=…`) with its two forms: the code from
//! the mail (`POST /signup/code`, `verify_by_code` of `POST /user/verify`) and a new mail
//! (`POST /signup/resend`, `resend_verification` of `POST /user/verification/resend`), each
//! under its API route's rate limit and response-time floor. A wrong code, like the API, gets one
//! answer whatever the reason (wrong, expired, locked, no such account), so the page does not
//! tell whether an address has an account either.

use std::time::Instant;

use axum::{
    Form,
    extract::{Query, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use common::trace::TraceContext;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::{form_message, log_unexpected, query_value, see_other};
use crate::{
    domain::UserEmail,
    error::ApiError,
    rate_limit::ClientAddress,
    routes::{
        answer_no_sooner_than,
        resend::resend_verification,
        verify::{VerifyOutcome, confirmation::verify_by_code},
    },
    state::AppState,
};

const TITLE: &str = "Check your inbox";

/// `?email=…&resent=1`.
#[derive(Deserialize)]
pub(super) struct CheckQuery {
    #[serde(default)]
    email: String,
    #[serde(default)]
    resent: Option<String>,
}

/// The code form, and the resend form (`email` only).
#[derive(Deserialize, Default)]
pub(super) struct CodeForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    code: String,
}

#[derive(Debug, Default, Serialize)]
struct FieldErrors {
    email: Option<String>,
    code: Option<String>,
    resend_email: Option<String>,
}

/// `GET /signup/check`.
pub(super) async fn page(
    State(state): State<AppState>,
    Query(query): Query<CheckQuery>,
) -> Response {
    let email = UserEmail::new(&query.email);
    render(
        &state,
        StatusCode::OK,
        email.as_str(),
        "",
        &FieldErrors::default(),
        None,
        query.resent.is_some(),
    )
}

/// `POST /signup/code`: a right code redirects to the verified page.
pub(super) async fn submit_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientAddress,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Response {
    let started = Instant::now();
    let Form(form) = form.unwrap_or_default();
    let email = UserEmail::new(&form.email);
    // People copy codes with spaces ("123 456").
    let code: String = form.code.chars().filter(|c| !c.is_whitespace()).collect();
    let mut errors = FieldErrors::default();
    if email.as_str().is_empty() {
        errors.email = Some("Enter your email address.".to_owned());
    }
    if code.is_empty() {
        errors.code = Some("Enter the six-digit code from the mail.".to_owned());
    }
    if errors.email.is_some() || errors.code.is_some() {
        return render(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            email.as_str(),
            &code,
            &errors,
            None,
            false,
        );
    }
    let trace = TraceContext::from_headers(&headers);
    let result = match state.rate_limits.check("/user/verify", client.0) {
        Ok(()) => verify_by_code(&state, &email, &code, client, &trace).await,
        Err(error) => Err(error),
    };
    // The time of the answer must not tell the address's state (as on the API).
    answer_no_sooner_than(started, state.settings.min_response_time).await;
    let error = match result {
        Ok(VerifyOutcome::Verified) => return see_other("/signup/verified"),
        Ok(VerifyOutcome::AlreadyVerified) => return see_other("/signup/already-verified"),
        Err(error) => error,
    };
    let status = error.status();
    let mut form_error = None;
    match error {
        ApiError::Validation(_) => {
            errors.code = Some("The code is six digits, for example 123456.".to_owned());
        }
        ApiError::InvalidCode => {
            errors.code = Some(
                "This code is not correct or no longer valid. After several wrong codes it \
                 stops working: ask for a new mail below."
                    .to_owned(),
            );
        }
        other => {
            form_error = Some(form_message(&other));
            log_unexpected(other);
        }
    }
    render(
        &state,
        status,
        email.as_str(),
        &code,
        &errors,
        form_error,
        false,
    )
}

/// `POST /signup/resend`: always back to the check page saying a mail is on its way (if there
/// is an account waiting), like the API's 202.
pub(super) async fn resend(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientAddress,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Response {
    let started = Instant::now();
    let Form(form) = form.unwrap_or_default();
    let email = UserEmail::new(&form.email);
    if email.as_str().is_empty() {
        let errors = FieldErrors {
            resend_email: Some("Enter your email address.".to_owned()),
            ..FieldErrors::default()
        };
        return render(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
            "",
            &errors,
            None,
            false,
        );
    }
    let trace = TraceContext::from_headers(&headers);
    let result = match state
        .rate_limits
        .check("/user/verification/resend", client.0)
    {
        Ok(()) => resend_verification(&state, &email, &trace).await,
        Err(error) => Err(error),
    };
    answer_no_sooner_than(started, state.settings.min_response_time).await;
    match result {
        Ok(outcome) => {
            metrics::counter!("verification_resends_total", "outcome" => outcome).increment(1);
            see_other(&format!(
                "/signup/check?email={}&resent=1",
                query_value(email.as_str())
            ))
        }
        Err(error) => {
            let status = error.status();
            let message = form_message(&error);
            log_unexpected(error);
            render(
                &state,
                status,
                email.as_str(),
                "",
                &FieldErrors::default(),
                Some(message),
                false,
            )
        }
    }
}

/// `GET /signup/verified`.
pub(super) async fn verified(State(state): State<AppState>) -> Response {
    state.pages.outcome(StatusCode::OK, &super::VERIFIED)
}

/// `GET /signup/already-verified`.
pub(super) async fn already_verified(State(state): State<AppState>) -> Response {
    state
        .pages
        .outcome(StatusCode::OK, &super::ALREADY_VERIFIED)
}

fn render(
    state: &AppState,
    status: StatusCode,
    email: &str,
    code: &str,
    errors: &FieldErrors,
    form_error: Option<String>,
    resent: bool,
) -> Response {
    state.pages.page(
        status,
        "check.html",
        context! { title => TITLE, email, code, errors, form_error, resent },
    )
}
