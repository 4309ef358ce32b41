//! `phone_verifications`: one row per phone verification. The code is never stored: it is
//! derived from `nonce` under `CODE_HMAC_KEY` (see `crate::phone::code`).

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// The state of a phone verification (Twilio Verify's names). Stored as text; raw SQL binds the
/// enum, the schema's CHECK lists the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub(crate) enum PhoneVerificationStatus {
    /// A code was issued and may be checked (until `expires_at`).
    #[sea_orm(string_value = "pending")]
    Pending,
    /// The right code was checked (Twilio's `approved`).
    #[sea_orm(string_value = "verified")]
    Verified,
    /// `expires_at` passed before the right code was checked; recorded lazily, so a `pending`
    /// row past its `expires_at` is expired too.
    #[sea_orm(string_value = "expired")]
    Expired,
    /// `PHONE_CODE_MAX_ATTEMPTS` checks failed.
    #[sea_orm(string_value = "max_attempts_reached")]
    MaxAttemptsReached,
    /// A newer verification of the same number replaced it (another registration).
    #[sea_orm(string_value = "canceled")]
    Canceled,
}

/// `Debug` leaves out the nonce (with the key it gives the code) and the full number.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "phone_verifications")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: Uuid,
    pub(crate) user_id: Uuid,
    /// E.164.
    pub(crate) phone: String,
    /// Random bytes (hex) the code is derived from; useless without `CODE_HMAC_KEY`.
    pub(crate) nonce: String,
    /// Digits of this verification's code (`PHONE_CODE_LENGTH` when it was issued).
    pub(crate) code_length: i32,
    pub(crate) status: PhoneVerificationStatus,
    /// Checks counted so far (right or wrong), one atomic update each.
    pub(crate) attempts: i32,
    /// SMS sent for it so far (`PHONE_MAX_SENDS`).
    pub(crate) sends: i32,
    /// Last SMS sent (`PHONE_RESEND_COOLDOWN`).
    pub(crate) last_sent_at: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    /// The code does not work after this (`PHONE_CODE_TTL`).
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) verified_at: Option<DateTime<Utc>>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The status at `now`: a `pending` row past its `expires_at` is `expired`.
    pub(crate) fn status_at(&self, now: DateTime<Utc>) -> PhoneVerificationStatus {
        if self.status == PhoneVerificationStatus::Pending && self.expires_at <= now {
            PhoneVerificationStatus::Expired
        } else {
            self.status
        }
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("phone", &common::events::mask_phone(&self.phone))
            .field("nonce", &"[redacted]")
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .field("sends", &self.sends)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}
