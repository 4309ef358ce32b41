//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations: the router
//! is built through `utoipa_axum::OpenApiRouter` (see [`super::router`]), so a route cannot be
//! served without being documented.

use std::sync::Arc;

use axum::{Extension, Json};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};

/// Title, tags and the bearer scheme; the paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "signup-outbox webhook-service",
        description = "Signed webhooks to subscribed endpoints (Standard Webhooks) and scheduled \
                       HTTP jobs with a signed outcome report. `/v1/…` needs \
                       `Authorization: Bearer <WEBHOOK_API_TOKEN>`. Errors are \
                       `{\"error\": {\"code\", \"message\", \"details\"?}}`."
    ),
    modifiers(&BearerScheme),
    // The body POSTed to a job's `notify` URL (not an answer of this API).
    components(schemas(crate::jobs::JobReport)),
    tags(
        (name = "endpoints", description = "Where webhooks go, and their signing secrets"),
        (name = "messages", description = "What an endpoint was sent; replay and recovery"),
        (name = "jobs", description = "Scheduled HTTP requests"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
pub(crate) struct ApiDoc;

/// Declares the `bearer` security scheme the `/v1` paths name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This OpenAPI document", body = Object)))]
pub(crate) async fn openapi_json(
    Extension(document): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json(document.as_ref().clone())
}
