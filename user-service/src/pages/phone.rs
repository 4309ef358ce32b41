//! The phone part of the check-your-inbox page, shown when a number was given at sign-up:
//! `POST /signup/phone` checks the SMS code (`check_phone_code` of `POST /user/phone/verify`),
//! `POST /signup/phone/resend` sends it again (`resend_phone_code` of
//! `POST /user/phone/verification/resend`), under the API routes' rate limits. Unlike the mail
//! code, the API answers the SMS code's state (`incorrect`, `expired`, `max_attempts_reached`),
//! so the page says it too: a locked code says it is locked.

use std::time::Instant;

use axum::{
    Form,
    extract::{State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use common::trace::TraceContext;

use super::{
    check::{CodeForm, View, check_url, refused, render},
    form_message, see_other,
};
use crate::{
    error::ApiError,
    phone::verification::CheckResult,
    rate_limit::ClientAddress,
    routes::{
        answer_no_sooner_than,
        phone::{check::check_phone_code, resend::resend_phone_code},
    },
    state::AppState,
};

/// `POST /signup/phone` (`email`, `phone`, `code`).
pub(super) async fn submit_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientAddress,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Response {
    let started = Instant::now();
    let Form(form) = form.unwrap_or_default();
    let code = form.typed_code();
    let mut view = View {
        phone_code: code.clone(),
        ..form.view()
    };
    let trace = TraceContext::from_headers(&headers);
    let result = state
        .rate_limits
        .within(
            "/user/phone/verify",
            client.0,
            check_phone_code(&state, &view.phone, &code, &trace),
        )
        .await;
    answer_no_sooner_than(started, state.settings.min_response_time).await;
    let message = match result {
        Ok(CheckResult::Verified | CheckResult::AlreadyVerified) => {
            return see_other(&check_url(&view.email, "", "phone_verified=1"));
        }
        Ok(CheckResult::Incorrect) => "This code is not correct.",
        Ok(CheckResult::Expired) => "This code has expired. Ask for a new SMS below.",
        Ok(CheckResult::MaxAttemptsReached) => {
            "Too many wrong codes: this code is locked. Ask for a new SMS below."
        }
        Err(ApiError::Validation(_)) => "Enter the digits from the SMS.",
        Err(error) => {
            let message = match error {
                ApiError::InvalidPhone => "This phone number is not valid.".to_owned(),
                ref other => form_message(other),
            };
            return refused(&state, view, error, message);
        }
    };
    view.errors.phone_code = Some(message.to_owned());
    render(&state, StatusCode::UNPROCESSABLE_ENTITY, &view)
}

/// `POST /signup/phone/resend` (`email`, `phone`).
pub(super) async fn resend(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientAddress,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Response {
    let started = Instant::now();
    let Form(form) = form.unwrap_or_default();
    let view = form.view();
    let trace = TraceContext::from_headers(&headers);
    let result = state
        .rate_limits
        .within(
            "/user/phone/verification/resend",
            client.0,
            resend_phone_code(&state, &view.phone, client, &trace, started),
        )
        .await;
    match result {
        Ok(()) => see_other(&check_url(&view.email, &view.phone, "sms_resent=1")),
        Err(error) => {
            let message = match &error {
                ApiError::InvalidPhone
                | ApiError::PhoneTypeNotAllowed
                | ApiError::PhoneCountryNotAllowed => {
                    "Codes cannot be sent to this phone number.".to_owned()
                }
                other => form_message(other),
            };
            refused(&state, view, error, message)
        }
    }
}
