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

/// `?email=…&phone=…&resent=1&sms_resent=1` (`phone` when one was given at sign-up).
#[derive(Deserialize)]
pub(super) struct CheckQuery {
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    resent: Option<String>,
    #[serde(default)]
    sms_resent: Option<String>,
    #[serde(default)]
    phone_verified: Option<String>,
}

/// The code form, and the resend form (`email` only); `phone` is carried along to the next page.
#[derive(Deserialize, Default)]
pub(super) struct CodeForm {
    #[serde(default)]
    pub(super) email: String,
    #[serde(default)]
    pub(super) code: String,
    #[serde(default)]
    pub(super) phone: String,
}

impl CodeForm {
    /// The page showing what was posted back: the address as normalised, the number trimmed.
    pub(super) fn view(&self) -> View {
        View {
            email: UserEmail::new(&self.email).as_str().to_owned(),
            phone: self.phone.trim().to_owned(),
            ..View::default()
        }
    }

    /// The typed code without spaces (people copy "123 456").
    pub(super) fn typed_code(&self) -> String {
        self.code.chars().filter(|c| !c.is_whitespace()).collect()
    }
}

#[derive(Debug, Default, Serialize)]
pub(super) struct FieldErrors {
    pub(super) email: Option<String>,
    pub(super) code: Option<String>,
    pub(super) resend_email: Option<String>,
    pub(super) phone_code: Option<String>,
}

/// What the check page shows.
#[derive(Debug, Default, Serialize)]
pub(super) struct View {
    pub(super) email: String,
    pub(super) code: String,
    /// The number an SMS code went to, if any: adds the phone code form.
    pub(super) phone: String,
    pub(super) phone_code: String,
    pub(super) errors: FieldErrors,
    pub(super) form_error: Option<String>,
    pub(super) resent: bool,
    pub(super) sms_resent: bool,
    pub(super) phone_verified: bool,
}

/// `/signup/check` for `email` (and `phone`), with `flag` (`resent=1`, …) if not empty.
pub(super) fn check_url(email: &str, phone: &str, flag: &str) -> String {
    let mut url = format!("/signup/check?email={}", query_value(email));
    if !phone.is_empty() {
        url.push_str(&format!("&phone={}", query_value(phone)));
    }
    if !flag.is_empty() {
        url.push('&');
        url.push_str(flag);
    }
    url
}

/// `GET /signup/check`.
pub(super) async fn page(
    State(state): State<AppState>,
    Query(query): Query<CheckQuery>,
) -> Response {
    let view = View {
        email: UserEmail::new(&query.email).as_str().to_owned(),
        phone: query.phone.trim().to_owned(),
        resent: query.resent.is_some(),
        sms_resent: query.sms_resent.is_some(),
        phone_verified: query.phone_verified.is_some(),
        ..View::default()
    };
    render(&state, StatusCode::OK, &view)
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
    let code = form.typed_code();
    let mut view = View {
        code: code.clone(),
        ..form.view()
    };
    if email.as_str().is_empty() {
        view.errors.email = Some("Enter your email address.".to_owned());
    }
    if code.is_empty() {
        view.errors.code = Some("Enter the six-digit code from the mail.".to_owned());
    }
    if view.errors.email.is_some() || view.errors.code.is_some() {
        return render(&state, StatusCode::UNPROCESSABLE_ENTITY, &view);
    }
    let trace = TraceContext::from_headers(&headers);
    let result = state
        .rate_limits
        .within(
            "/user/verify",
            client.0,
            verify_by_code(&state, &email, &code, client, &trace),
        )
        .await;
    // The time of the answer must not tell the address's state (as on the API).
    answer_no_sooner_than(started, state.settings.min_response_time).await;
    let error = match result {
        Ok(VerifyOutcome::Verified) => return see_other("/signup/verified"),
        Ok(VerifyOutcome::AlreadyVerified) => return see_other("/signup/already-verified"),
        Err(error) => error,
    };
    let status = error.status();
    let message = match error {
        ApiError::Validation(_) => "The code is six digits, for example 123456.",
        ApiError::InvalidCode => {
            "This code is not correct or no longer valid. After several wrong codes it stops \
             working: ask for a new mail below."
        }
        other => {
            let message = form_message(&other);
            return refused(&state, view, other, message);
        }
    };
    view.errors.code = Some(message.to_owned());
    render(&state, status, &view)
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
    let mut view = form.view();
    if email.as_str().is_empty() {
        view.errors.resend_email = Some("Enter your email address.".to_owned());
        return render(&state, StatusCode::UNPROCESSABLE_ENTITY, &view);
    }
    let trace = TraceContext::from_headers(&headers);
    let result = state
        .rate_limits
        .within(
            "/user/verification/resend",
            client.0,
            resend_verification(&state, &email, &trace),
        )
        .await;
    answer_no_sooner_than(started, state.settings.min_response_time).await;
    match result {
        Ok(outcome) => {
            metrics::counter!("verification_resends_total", "outcome" => outcome).increment(1);
            see_other(&check_url(&view.email, &view.phone, "resent=1"))
        }
        Err(error) => {
            let message = form_message(&error);
            refused(&state, view, error, message)
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

/// The check page with `view` and `message` above its forms, answered with `error`'s status
/// (`error` logged if unexpected).
pub(super) fn refused(
    state: &AppState,
    mut view: View,
    error: ApiError,
    message: String,
) -> Response {
    let status = error.status();
    view.form_error = Some(message);
    log_unexpected(error);
    render(state, status, &view)
}

/// The check page with `view`, answered with `status`.
pub(super) fn render(state: &AppState, status: StatusCode, view: &View) -> Response {
    state.pages.page(
        status,
        "check.html",
        context! { title => TITLE, ..minijinja::Value::from_serialize(view) },
    )
}
