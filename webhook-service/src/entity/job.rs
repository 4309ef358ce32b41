//! `jobs`: a scheduled request posted to `POST /v1/jobs`. Its call is the delivery with the
//! same id (kind `job`); the report of its outcome is a delivery of kind `notify`.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// A job. `Debug` leaves out the request (headers may carry credentials) and the secret.
#[derive(Clone, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: Uuid,
    /// `Idempotency-Key` of the creating request.
    pub(crate) idempotency_key: Option<String>,
    /// SHA-256 of the creating request's body: the same key with another body is refused.
    pub(crate) request_fingerprint: String,
    /// The job as posted (normalised), shown back by `GET /v1/jobs/{id}`.
    pub(crate) request: Json,
    /// Where the outcome report goes: `{url, headers, timeout_ms}`.
    pub(crate) notify: Option<Json>,
    /// The `whsec_…` secret the report is signed with (returned once, at creation).
    pub(crate) notify_secret: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}
