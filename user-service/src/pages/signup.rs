//! `GET /signup` and `POST /signup`: the sign-up form. The POST runs
//! `routes::register::register_user`, the JSON API's registration, under the same rate limit
//! (`RATE_LIMIT_REGISTER`), and redirects to the check-your-inbox page; an error re-renders the
//! form with a message at the field it concerns, with what was typed except the password.

use axum::{
    Form,
    extract::{State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use common::trace::TraceContext;
use minijinja::context;
use serde::Serialize;
use serde_json::Value;

use super::{form_message, log_unexpected, see_other};
use crate::{
    error::ApiError,
    rate_limit::ClientAddress,
    routes::register::{RegisterRequest, TypedValues, register_user},
    state::AppState,
};

/// A message per field of the form; `None` where the field is fine.
#[derive(Debug, Default, Serialize)]
struct FieldErrors {
    email: Option<String>,
    password: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
}

const TITLE: &str = "Create your account";

/// `GET /signup`.
pub(super) async fn form(State(state): State<AppState>) -> Response {
    render(
        &state,
        StatusCode::OK,
        &TypedValues::default(),
        &FieldErrors::default(),
        None,
    )
}

/// `POST /signup` (`application/x-www-form-urlencoded`, the fields of `POST /user/register`).
pub(super) async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientAddress,
    form: Result<Form<RegisterRequest>, FormRejection>,
) -> Response {
    let Ok(Form(request)) = form else {
        let message = form_message(&ApiError::MalformedJson(String::new()));
        return render(
            &state,
            StatusCode::BAD_REQUEST,
            &TypedValues::default(),
            &FieldErrors::default(),
            Some(message),
        );
    };
    let values = request.typed_values();
    let trace = TraceContext::from_headers(&headers);
    let result = state
        .rate_limits
        .within(
            "/user/register",
            client.0,
            register_user(&state, request, client, &trace, None),
        )
        .await;
    match result {
        Ok(_) => see_other(&super::check::check_url(&values.email, &values.phone, "")),
        Err(error) => {
            let status = error.status();
            let (errors, form_error) = messages(error);
            render(&state, status, &values, &errors, form_error)
        }
    }
}

fn render(
    state: &AppState,
    status: StatusCode,
    values: &TypedValues,
    errors: &FieldErrors,
    form_error: Option<String>,
) -> Response {
    let form_error = form_error.or_else(|| {
        (errors.email.is_some()
            || errors.password.is_some()
            || errors.first_name.is_some()
            || errors.last_name.is_some()
            || errors.phone.is_some())
        .then(|| "Please correct the fields marked below.".to_owned())
    });
    state.pages.page(
        status,
        "signup.html",
        context! { title => TITLE, values, errors, form_error },
    )
}

/// The inline messages of a registration error: per field, or one for the whole form.
fn messages(error: ApiError) -> (FieldErrors, Option<String>) {
    let mut errors = FieldErrors::default();
    match &error {
        ApiError::Validation(details) => {
            for (field, label, slot) in [
                ("email", "Email address", &mut errors.email),
                ("password", "Password", &mut errors.password),
                ("first_name", "First name", &mut errors.first_name),
                ("last_name", "Last name", &mut errors.last_name),
                ("phone", "Phone number", &mut errors.phone),
            ] {
                *slot = first_problem(details, field).map(|problem| match problem.0 {
                    "invalid_email" => "Enter an email address like name@example.com.".to_owned(),
                    _ => format!("{label} {}.", problem.1),
                });
            }
            if errors.email.is_none()
                && errors.password.is_none()
                && errors.first_name.is_none()
                && errors.last_name.is_none()
                && errors.phone.is_none()
            {
                return (errors, Some(form_message(&error)));
            }
        }
        ApiError::EmailTaken => {
            errors.email = Some(
                "An account with this email address already exists. If it is yours, look for \
                 its confirmation mail, or ask for a new one on the next page."
                    .to_owned(),
            );
        }
        ApiError::InvalidPhone => {
            errors.phone = Some(
                "Enter a phone number in international format, for example +447400123456."
                    .to_owned(),
            );
        }
        ApiError::PhoneTypeNotAllowed => {
            errors.phone = Some(
                "We cannot send codes to this type of phone number. Use a mobile number."
                    .to_owned(),
            );
        }
        ApiError::PhoneCountryNotAllowed => {
            errors.phone =
                Some("We cannot send codes to phone numbers of this country.".to_owned());
        }
        _ => {
            let message = form_message(&error);
            log_unexpected(error);
            return (errors, Some(message));
        }
    }
    (errors, None)
}

/// `(code, message)` of the first problem `details` lists for `field`.
fn first_problem<'a>(details: &'a Value, field: &str) -> Option<(&'a str, &'a str)> {
    let problem = details.get(field)?.get(0)?;
    Some((
        problem.get("code")?.as_str().unwrap_or_default(),
        problem.get("message")?.as_str()?,
    ))
}
