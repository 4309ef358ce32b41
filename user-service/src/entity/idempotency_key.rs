//! `idempotency_keys`: stored responses of `POST /user/register` by `Idempotency-Key`.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// A stored response.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub(crate) struct Model {
    /// SHA-256 (hex) of the request's email and the client's key (keys are per address).
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) key: String,
    /// SHA-256 of the request body, to detect a key reused for another request.
    pub(crate) request_hash: String,
    /// HTTP status of the stored response.
    pub(crate) response_status: i32,
    /// JSON body of the stored response.
    pub(crate) response_body: String,
    pub(crate) created_at: DateTime<Utc>,
    /// After this the key may be used again.
    pub(crate) expires_at: DateTime<Utc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
