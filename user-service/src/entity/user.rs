//! `users`: one row per account.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// Whether the user proved the address. Stored as text; the values are the only place the
/// status strings are spelled (raw SQL binds the enum, or formats its value into the SQL where a
/// partial index needs the literal; the schema's CHECK lists the same two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub(crate) enum UserStatus {
    /// Registered, address not proved yet.
    #[sea_orm(string_value = "pending_verification")]
    PendingVerification,
    /// Proved the address.
    #[sea_orm(string_value = "verified")]
    Verified,
}

/// `Debug` leaves out the password hash (an offline-crackable secret) and the names.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: Uuid,
    /// Normalised (trimmed, lower-cased) email; unique.
    pub(crate) email: String,
    /// Argon2id PHC string. Never logged, never in an event.
    pub(crate) password_hash: String,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    /// Pending until the address is proved.
    pub(crate) status: UserStatus,
    /// Registration time.
    pub(crate) created_at: DateTime<Utc>,
    /// When the address was verified.
    pub(crate) verified_at: Option<DateTime<Utc>>,
    /// Reminders written so far.
    pub(crate) reminders_sent: i32,
    /// When the next reminder is due; `None` when no more reminders will be sent.
    pub(crate) next_reminder_at: Option<DateTime<Utc>>,
    /// Last accepted resend request (rate limit).
    pub(crate) last_resend_at: Option<DateTime<Utc>>,
    /// Wrong codes since `wrong_codes_since` (`MAX_WRONG_CODES_PER_DAY`); new verifications do
    /// not reset it.
    pub(crate) wrong_codes: i32,
    /// Start of the 24-hour window `wrong_codes` counts in.
    pub(crate) wrong_codes_since: Option<DateTime<Utc>>,
    /// Accepted resends since `resends_since` (`MAX_RESENDS_PER_DAY`).
    pub(crate) resends: i32,
    /// Start of the 24-hour window `resends` counts in.
    pub(crate) resends_since: Option<DateTime<Utc>>,
    /// Last "someone tried to sign up with your address" notice written (rate limit).
    pub(crate) last_attempt_notice_at: Option<DateTime<Utc>>,
    /// The phone number given at registration (E.164), verified or not.
    pub(crate) phone: Option<String>,
    /// When `phone` was proved with an SMS code.
    pub(crate) phone_verified_at: Option<DateTime<Utc>>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("verified_at", &self.verified_at)
            .field("password_hash", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password_hash() {
        let user = Model {
            id: Uuid::nil(),
            email: "ann@example.com".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
            first_name: Some("Ann".into()),
            last_name: None,
            status: UserStatus::PendingVerification,
            created_at: Utc::now(),
            verified_at: None,
            reminders_sent: 0,
            next_reminder_at: None,
            last_resend_at: None,
            wrong_codes: 0,
            wrong_codes_since: None,
            resends: 0,
            resends_since: None,
            last_attempt_notice_at: None,
            phone: None,
            phone_verified_at: None,
        };
        let debug = format!("{user:?}");
        assert!(!debug.contains("argon2id"), "{debug}");
        assert!(!debug.contains("aGFzaGhhc2hoYXNo"), "{debug}");
        assert!(debug.contains("PendingVerification"), "{debug}");
    }
}
