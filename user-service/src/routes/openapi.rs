//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations.
//!
//! The router is built through `utoipa_axum::OpenApiRouter` (see [`super::documented_routes`]),
//! so a route cannot be served without being documented: both come from the same `routes!()` call.

use axum::{Json, extract::State};
use utoipa::OpenApi;

use crate::state::AppState;

/// Title, version and tags of the document; the paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "signup-outbox user-service",
        description = "Sign-up with email verification. Every state change and its event commit \
                       together (transactional outbox). Errors are \
                       `{\"error\": {\"code\", \"message\", \"details\"?}}`."
    ),
    tags(
        (name = "registration", description = "Creating accounts"),
        (name = "verification", description = "Proving the email address"),
        (name = "operations", description = "Health and this document (metrics are on the admin port)"),
    )
)]
pub(crate) struct ApiDoc;

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This OpenAPI document", body = Object)))]
pub(crate) async fn openapi_json(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(state.openapi.as_ref().clone())
}
