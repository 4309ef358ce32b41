//! `verifications`: one row per issued link + code, stored as hashes.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// `Debug` leaves out the hashes: a six-digit code's hash is brute-forced in a second.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "verifications")]
pub(crate) struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub(crate) id: Uuid,
    pub(crate) user_id: Uuid,
    /// SHA-256 (hex) of the link token; unique.
    pub(crate) token_hash: String,
    /// HMAC-SHA256 (hex) of the code under `CODE_HMAC_KEY`, bound to the verification id.
    pub(crate) code_hash: String,
    /// Issue time.
    pub(crate) created_at: DateTime<Utc>,
    /// Neither token nor code works after this.
    pub(crate) expires_at: DateTime<Utc>,
    /// The code does not work after this (`CODE_TTL`, shorter than the link's); `None` for
    /// verifications issued before codes expired sooner.
    pub(crate) code_expires_at: Option<DateTime<Utc>>,
    /// Wrong code attempts so far.
    pub(crate) attempts: i32,
    /// When it was used successfully.
    pub(crate) consumed_at: Option<DateTime<Utc>>,
    /// When a newer verification replaced it.
    pub(crate) superseded_at: Option<DateTime<Utc>>,
}

/// What a verification is still good for, from [`Model::usability`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usability {
    /// Its link and its code work.
    Usable,
    /// It verified the user already.
    Consumed,
    /// A newer verification replaced it.
    Superseded,
    /// Its `expires_at` has passed.
    Expired,
    /// Too many wrong codes: the code no longer works. The link still does, since a 256-bit
    /// token cannot be guessed; the lock only bounds guessing the six digits.
    CodeLocked,
}

impl Model {
    /// The one check of whether this verification can be used at `now`, in this order: consumed,
    /// superseded, expired, then locked after `max_code_attempts` wrong codes.
    pub(crate) fn usability(&self, now: DateTime<Utc>, max_code_attempts: u32) -> Usability {
        if self.consumed_at.is_some() {
            Usability::Consumed
        } else if self.superseded_at.is_some() {
            Usability::Superseded
        } else if self.expires_at <= now {
            Usability::Expired
        } else if u32::try_from(self.attempts).unwrap_or(u32::MAX) >= max_code_attempts {
            Usability::CodeLocked
        } else {
            Usability::Usable
        }
    }

    /// Whether its code can still be checked at `now`: usable and within the code's lifetime.
    pub(crate) fn code_usable(&self, now: DateTime<Utc>, max_code_attempts: u32) -> bool {
        self.usability(now, max_code_attempts) == Usability::Usable
            && self.code_expires_at.is_none_or(|at| now < at)
    }
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub(crate) enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("token_hash", &"[redacted]")
            .field("code_hash", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("code_expires_at", &self.code_expires_at)
            .field("attempts", &self.attempts)
            .field("consumed_at", &self.consumed_at)
            .field("superseded_at", &self.superseded_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(now: DateTime<Utc>) -> Model {
        Model {
            id: Uuid::nil(),
            user_id: Uuid::nil(),
            token_hash: String::new(),
            code_hash: String::new(),
            created_at: now,
            expires_at: now + chrono::Duration::hours(1),
            code_expires_at: Some(now + chrono::Duration::minutes(10)),
            attempts: 0,
            consumed_at: None,
            superseded_at: None,
        }
    }

    #[test]
    fn debug_output_hides_the_hashes() {
        let verification = Model {
            token_hash: "aaaa1111token".into(),
            code_hash: "bbbb2222code".into(),
            ..issued(Utc::now())
        };
        let debug = format!("{verification:?}");
        assert!(!debug.contains("aaaa1111token"), "{debug}");
        assert!(!debug.contains("bbbb2222code"), "{debug}");
        assert!(debug.contains("attempts: 0"), "{debug}");
    }

    #[test]
    fn usability_checks_consumed_superseded_expired_then_locked() {
        let now = Utc::now();
        let later = now + chrono::Duration::hours(2);
        let fresh = issued(now);
        assert_eq!(fresh.usability(now, 5), Usability::Usable);
        let locked = Model {
            attempts: 5,
            ..issued(now)
        };
        assert_eq!(locked.usability(now, 5), Usability::CodeLocked);
        assert_eq!(locked.usability(later, 5), Usability::Expired);
        let replaced = Model {
            superseded_at: Some(now),
            ..locked.clone()
        };
        assert_eq!(replaced.usability(later, 5), Usability::Superseded);
        let used = Model {
            consumed_at: Some(now),
            ..replaced
        };
        assert_eq!(used.usability(later, 5), Usability::Consumed);
    }

    #[test]
    fn the_code_expires_before_the_link() {
        let now = Utc::now();
        let fresh = issued(now);
        assert!(fresh.code_usable(now, 5));
        let in_twenty_minutes = now + chrono::Duration::minutes(20);
        assert!(!fresh.code_usable(in_twenty_minutes, 5));
        assert_eq!(fresh.usability(in_twenty_minutes, 5), Usability::Usable);
        assert!(
            !Model {
                attempts: 5,
                ..issued(now)
            }
            .code_usable(now, 5)
        );
    }
}
