//! `attempts`: one row per outbound call made.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// One attempt of a delivery.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "attempts")]
pub(crate) struct Model {
    #[sea_orm(primary_key)]
    pub(crate) id: i64,
    pub(crate) delivery_id: Uuid,
    /// 1-based attempt number.
    pub(crate) attempt: i32,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) duration_ms: i64,
    /// The URL called, with userinfo and query values redacted.
    pub(crate) url: String,
    /// HTTP status, when an answer came.
    pub(crate) status: Option<i32>,
    /// `timeout`, `connect`, `dns`, `tls`, `blocked`, `redirect`, … when none did (or the
    /// answer was a failure).
    pub(crate) error_kind: Option<String>,
    /// Error detail (never a secret).
    pub(crate) error: Option<String>,
    /// The response headers that matter (`content-type`, `retry-after`, …), JSON object.
    pub(crate) response_headers: Option<Json>,
    /// The response body, at most 20 kB.
    pub(crate) response_body: Option<String>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
