//! The HTTP API: one module per endpoint, and [`documented_routes`], which builds the router and
//! its OpenAPI document from the same `routes!()` calls, so an API route cannot be served
//! without being documented (the HTML pages of `crate::pages` are merged in beside it). Logic shared with the scheduler (issuing verifications, the outbox,
//! passwords, idempotency) lives in the feature modules at the crate root.

pub(crate) mod health;
mod openapi;
pub(crate) mod phone;
pub(crate) mod register;
pub(crate) mod resend;
pub(crate) mod verify;

use axum::Router;
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

/// Waits until `floor` has passed since `started` (`MIN_RESPONSE_TIME`): endpoints whose work
/// depends on whether an address has an account answer after the same time either way.
pub(crate) async fn answer_no_sooner_than(started: std::time::Instant, floor: std::time::Duration) {
    tokio::time::sleep_until((started + floor).into()).await;
}

/// Every route with its OpenAPI description: registering a handler here documents it.
pub(crate) fn documented_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(register::register))
        .routes(routes!(
            verify::page::verify_page,
            verify::confirmation::verify
        ))
        .routes(routes!(resend::resend))
        .routes(routes!(phone::check::check))
        .routes(routes!(phone::resend::resend))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(openapi::openapi_json))
        .split_for_parts()
}
