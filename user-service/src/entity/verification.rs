//! `verifications`: one row per issued link + code, stored as hashes.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// A verification row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "verifications")]
pub struct Model {
    /// Verification id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The user it verifies.
    pub user_id: Uuid,
    /// SHA-256 (hex) of the link token; unique.
    pub token_hash: String,
    /// SHA-256 (hex) of the code, keyed by the verification id.
    pub code_hash: String,
    /// Issue time.
    pub created_at: DateTime<Utc>,
    /// Neither token nor code works after this.
    pub expires_at: DateTime<Utc>,
    /// Wrong code attempts so far.
    pub attempts: i32,
    /// When it was used successfully.
    pub consumed_at: Option<DateTime<Utc>>,
    /// When a newer verification replaced it.
    pub superseded_at: Option<DateTime<Utc>>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
