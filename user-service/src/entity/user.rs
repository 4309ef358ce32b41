//! `users`: one row per account.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// Status of a user that has not proved the address yet.
pub const STATUS_PENDING: &str = "pending_verification";
/// Status of a user that proved the address.
pub const STATUS_VERIFIED: &str = "verified";

/// A user row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// User id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Normalised (trimmed, lower-cased) email; unique.
    pub email: String,
    /// Argon2id PHC string. Never logged, never in an event.
    pub password_hash: String,
    /// Optional first name.
    pub first_name: Option<String>,
    /// Optional last name.
    pub last_name: Option<String>,
    /// [`STATUS_PENDING`] or [`STATUS_VERIFIED`].
    pub status: String,
    /// Registration time.
    pub created_at: DateTime<Utc>,
    /// When the address was verified.
    pub verified_at: Option<DateTime<Utc>>,
    /// Reminders written so far.
    pub reminders_sent: i32,
    /// When the next reminder is due; `None` when no more reminders will be sent.
    pub next_reminder_at: Option<DateTime<Utc>>,
    /// Last accepted resend request (rate limit).
    pub last_resend_at: Option<DateTime<Utc>>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
