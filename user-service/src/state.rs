//! `AppState`: what every handler shares. Its own module so handlers depend on it, not on
//! `startup` (which depends on the handlers to build the router).

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{password::PasswordHasher, rate_limit::RateLimits, settings::Settings};

/// Shared, cheaply cloned state of the handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) db: DatabaseConnection,
    /// Settings, validated at start-up.
    pub(crate) settings: Arc<Settings>,
    /// Argon2id hasher with its concurrency bound.
    pub(crate) hasher: PasswordHasher,
    /// Signalled after each commit that wrote outbox rows.
    pub(crate) outbox_wakeup: outbox::Wakeup,
    /// Per-client rate limits of the public endpoints.
    pub(crate) rate_limits: Arc<RateLimits>,
    /// The hosted pages' templates.
    pub(crate) pages: Arc<crate::pages::Templates>,
    /// The OpenAPI document of the router.
    pub(crate) openapi: Arc<utoipa::openapi::OpenApi>,
}
