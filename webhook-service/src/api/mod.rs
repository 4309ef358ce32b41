//! The HTTP API. STUB.

use axum::Router;

use crate::state::AppState;

/// Every route: `/v1/…` (bearer token), `/health/*`, `/metrics`, `/openapi.json`.
pub(crate) fn router(state: AppState) -> Router {
    Router::new().with_state(state)
}
