//! The hosted pages: server-rendered HTML for people, next to the JSON API for programs. No
//! JavaScript; one stylesheet. The pages call the API handlers' domain functions
//! (`routes::register::register_user`, `verify_by_code`, `resend_verification`), so the rules,
//! limits, metrics and events are the same; they only map [`ApiError`]s to inline messages.
//!
//! - `GET /signup`, `POST /signup` ([`signup`]): the sign-up form; success redirects (303) to
//! - `GET /signup/check?email=…` ([`check`]): "check your inbox", with the code form
//!   (`POST /signup/code`) and a resend button (`POST /signup/resend`); a right code redirects
//!   to `GET /signup/verified` (or `/signup/already-verified`); with a phone number, the SMS
//!   code form (`POST /signup/phone`) and a new SMS (`POST /signup/phone/resend`) ([`phone`]).
//! - The link page `GET /user/verify` and its outcome pages render the templates of this module
//!   (`routes::verify::page`).
//! - `GET /assets/style.css`: the stylesheet.
//!
//! Every page carries a strict CSP (no script at all, styles from this origin only,
//! `frame-ancestors 'none'`), `Referrer-Policy: no-referrer` and `Cache-Control: no-store`.
//! Every form POST must come from this origin ([`is_cross_site`]): a cross-site `Origin` (or,
//! without one, a cross-site `Sec-Fetch-Site`) is refused with 403 before the handler runs.
//! The page routes are not in the OpenAPI document: they are HTML for browsers, not the API.

mod check;
mod phone;
mod signup;

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use minijinja::Environment;
use serde::Serialize;

use crate::{error::ApiError, state::AppState};

/// The pages' Content-Security-Policy: nothing but this origin's stylesheet and form posts.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("templates/style.css");

/// The page templates, embedded in the binary; `.html` names turn HTML auto-escaping on.
pub(crate) struct Templates(Environment<'static>);

impl Templates {
    /// Loads the embedded templates.
    ///
    /// # Errors
    /// When a template does not parse (a bug caught by any test that starts the service).
    pub(crate) fn new() -> anyhow::Result<Self> {
        let mut env = Environment::new();
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("fields.html", include_str!("templates/fields.html")),
            ("signup.html", include_str!("templates/signup.html")),
            ("check.html", include_str!("templates/check.html")),
            ("confirm.html", include_str!("templates/confirm.html")),
            ("outcome.html", include_str!("templates/outcome.html")),
        ] {
            env.add_template(name, source)?;
        }
        Ok(Self(env))
    }

    /// `template` rendered with `context` as a page answer with the pages' headers.
    pub(crate) fn page(
        &self,
        status: StatusCode,
        template: &str,
        context: impl Serialize,
    ) -> Response {
        match self
            .0
            .get_template(template)
            .and_then(|template| template.render(context))
        {
            Ok(html) => with_page_headers((status, Html(html)).into_response()),
            Err(error) => ApiError::Internal(
                anyhow::Error::from(error).context(format!("rendering {template}")),
            )
            .into_response(),
        }
    }

    /// An outcome page: a title, its paragraphs and an optional link to go on.
    pub(crate) fn outcome(&self, status: StatusCode, outcome: &Outcome<'_>) -> Response {
        self.page(status, "outcome.html", outcome)
    }
}

/// What [`Templates::outcome`] shows.
#[derive(Serialize)]
pub(crate) struct Outcome<'a> {
    /// A CSS class and a stable name for tests: `verified`, `expired`, `invalid`, …
    pub(crate) kind: &'a str,
    pub(crate) title: &'a str,
    pub(crate) paragraphs: &'a [&'a str],
    pub(crate) next_href: Option<&'a str>,
    pub(crate) next_label: Option<&'a str>,
}

/// The pages' security headers on `response` (the API middleware adds `nosniff` and
/// `X-Frame-Options` to every answer).
pub(crate) fn with_page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// 303 to `location`, with the pages' headers (Post/Redirect/Get).
fn see_other(location: &str) -> Response {
    with_page_headers(Redirect::to(location).into_response())
}

/// The page routes, the cross-site refusal on their POSTs included.
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/signup", get(signup::form).post(signup::submit))
        .route("/signup/check", get(check::page))
        .route("/signup/code", axum::routing::post(check::submit_code))
        .route("/signup/resend", axum::routing::post(check::resend))
        .route("/signup/phone", axum::routing::post(phone::submit_code))
        .route("/signup/phone/resend", axum::routing::post(phone::resend))
        .route("/signup/verified", get(check::verified))
        .route("/signup/already-verified", get(check::already_verified))
        .route_layer(middleware::from_fn_with_state(state, refuse_cross_site))
        .route("/assets/style.css", get(stylesheet))
        .route("/assets/icon.svg", get(icon))
}

/// `GET /assets/style.css`: cacheable for a day (it changes only with a release).
async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// `GET /assets/icon.svg`: the pages' icon (without one, browsers ask for `/favicon.ico`).
async fn icon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("templates/icon.svg"),
    )
        .into_response()
}

/// Middleware: a POST [`is_cross_site`] gets the 403 page instead of its handler.
async fn refuse_cross_site(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::POST && is_cross_site(&state, request.headers(), request.uri()) {
        return cross_site_refused(&state);
    }
    next.run(request).await
}

/// The 403 page of a refused cross-site form post.
pub(crate) fn cross_site_refused(state: &AppState) -> Response {
    metrics::counter!("http_cross_site_refused_total").increment(1);
    state.pages.outcome(
        StatusCode::FORBIDDEN,
        &Outcome {
            kind: "refused",
            title: "This form was sent from another site",
            paragraphs: &["For your safety, forms of this service are only accepted from its own pages. Nothing was changed."],
            next_href: Some("/signup"),
            next_label: Some("Go to the sign-up page"),
        },
    )
}

/// Whether a form POST comes from another site (CSRF): its `Origin` is neither this request's
/// host nor `PUBLIC_BASE_URL`'s origin (`null` only with `Sec-Fetch-Site: same-origin`); without an `Origin`, a
/// `Sec-Fetch-Site` other than `same-origin` or `none`. With neither header (curl, tests,
/// browsers too old to send them) it is not cross-site: browsers that can be tricked into a
/// cross-site POST send one of them.
pub(crate) fn is_cross_site(state: &AppState, headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    let fetch_site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return true;
        };
        if origin == "null" {
            // Browsers send `Origin: null` for a same-origin POST from a page whose
            // `Referrer-Policy` is `no-referrer` (ours), and for sandboxed or opaque origins:
            // only the browser's own `Sec-Fetch-Site` tells them apart.
            return fetch_site != Some(b"same-origin");
        }
        let origin = origin.trim_end_matches('/');
        let host = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .or_else(|| uri.authority().map(axum::http::uri::Authority::as_str));
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        let same_host = origin_host.is_some() && origin_host == host;
        let public = state.settings.public_base_url.trim_end_matches('/');
        let same_public = public
            .strip_prefix(origin)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        return !(same_host || same_public);
    }
    !matches!(fetch_site, None | Some(b"same-origin" | b"none"))
}

/// A form-level message for an error that belongs to no field.
fn form_message(error: &ApiError) -> String {
    match error {
        ApiError::RateLimited { retry_after } => format!(
            "Too many attempts from your network. Please wait {retry_after} seconds and try again."
        ),
        ApiError::Overloaded | ApiError::Unavailable(_) => {
            "The service is busy right now. Please try again in a moment.".to_owned()
        }
        ApiError::PayloadTooLarge | ApiError::MalformedJson(_) | ApiError::UnsupportedMediaType => {
            "The form could not be read. Please reload the page and try again.".to_owned()
        }
        _ => "Something went wrong on our side. Please try again later.".to_owned(),
    }
}

/// Logs an unexpected error like the API does (its `IntoResponse` logs the cause chain once).
fn log_unexpected(error: ApiError) {
    if matches!(error, ApiError::Internal(_) | ApiError::Unavailable(_)) {
        drop(error.into_response());
    }
}

/// `email` as a query string value.
fn query_value(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The outcome of a verification, by link or by code.
pub(crate) const VERIFIED: Outcome<'static> = Outcome {
    kind: "verified",
    title: "Email address verified",
    paragraphs: &[
        "Thank you, your email address is verified. A welcome mail is on its way. You can close this page.",
    ],
    next_href: None,
    next_label: None,
};

/// Verified before: nothing changed.
pub(crate) const ALREADY_VERIFIED: Outcome<'static> = Outcome {
    kind: "already_verified",
    title: "Already verified",
    paragraphs: &["Your email address was already verified. Nothing more to do."],
    next_href: None,
    next_label: None,
};
