//! The HTTP API: the management and job API under `/v1` (bearer token), and `/health/*`,
//! `/metrics`, `/openapi.json` without one. Every route is registered through
//! `utoipa_axum::routes!()`, which documents it in the same call.
//!
//! - `endpoints`, `secrets`: endpoints and their signing secrets;
//! - `messages`, `replay`: an endpoint's messages and their attempts; sending them again;
//! - `jobs`: scheduled requests (the domain is `crate::jobs`);
//! - `health`, `openapi`: operations;
//! - `auth`, `layers`: the token check, the body bound, metrics, response headers;
//! - `error`, `fields`, `headers`: the error shape and the checks shared by the handlers.

mod auth;
mod endpoints;
pub(crate) mod error;
pub(crate) mod fields;
pub(crate) mod headers;
mod health;
mod jobs;
mod layers;
mod messages;
mod openapi;
mod replay;
mod secrets;

use std::sync::Arc;

use axum::{Extension, Router, middleware};
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

/// Every route: `/v1/…` (bearer token), `/health/*`, `/metrics`, `/openapi.json`.
pub(crate) fn router(state: AppState) -> Router {
    let (router, document) = documented_routes(&state);
    router
        .fallback(|| async { error::ApiError::NotFound("route") })
        .layer(Extension(Arc::new(document)))
        .layer(middleware::from_fn_with_state(
            layers::REQUEST_METRICS,
            common::http::metrics::record_request_metrics,
        ))
        .layer(middleware::from_fn(layers::response_headers))
        .with_state(state)
}

/// The routes and their OpenAPI document, from the same `routes!()` calls.
fn documented_routes(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let v1 = OpenApiRouter::new()
        .routes(routes!(endpoints::create, endpoints::list))
        .routes(routes!(
            endpoints::get,
            endpoints::update,
            endpoints::delete
        ))
        .routes(routes!(secrets::rotate))
        .routes(routes!(secrets::get))
        .routes(routes!(messages::list))
        .routes(routes!(messages::attempts))
        .routes(routes!(replay::retry))
        .routes(routes!(replay::recover))
        .routes(routes!(jobs::create))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        // The token is checked before the body is read.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            layers::read_body_in_time,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(v1)
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::openapi_json))
        .split_for_parts()
}
