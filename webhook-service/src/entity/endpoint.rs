//! `endpoints`: a subscriber's URL, the event types it wants and its signing secret(s).

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// An endpoint. `Debug` leaves out the secrets and the extra headers (they may carry auth).
#[derive(Clone, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "endpoints")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: Uuid,
    /// Where the webhooks are POSTed.
    pub(crate) url: String,
    /// Free text for the operator.
    pub(crate) description: String,
    /// Public event types (`user.registered`, …) it receives; `None`: every type.
    pub(crate) event_types: Option<Json>,
    /// Extra request headers, a JSON object of name → value.
    pub(crate) headers: Json,
    /// The signing secret, `whsec_…`.
    pub(crate) secret: String,
    /// The secret before the last rotation, still signing until `previous_secret_until`.
    pub(crate) previous_secret: Option<String>,
    /// End of the rotation grace period.
    pub(crate) previous_secret_until: Option<DateTime<Utc>>,
    /// Disabled endpoints receive nothing (their messages are still recorded as failed).
    pub(crate) enabled: bool,
    /// Why it was disabled (`manual`, `gone` (410), `failing`).
    pub(crate) disabled_reason: Option<String>,
    /// Start of the current unbroken run of failed attempts; `None` after a success.
    pub(crate) failing_since: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}
