//! Proving the address: `POST /user/verify` ([`confirmation`]) confirms by link token or by
//! email + code; `GET /user/verify` ([`page`]) is the page behind the mailed link, whose button
//! posts the token (a GET never consumes anything: mail scanners prefetch links).
//!
//! Verifying sets the user verified, stops reminders and writes `UserVerifiedV1` in one
//! transaction. Repeating it answers `already_verified` and writes nothing. Codes are compared
//! as hashes in constant time; after `MAX_CODE_ATTEMPTS` wrong codes the verification locks until
//! a new one is issued.

pub(crate) mod confirmation;
pub(crate) mod page;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::Serialize;

use crate::{
    entity::{
        user::{self, UserStatus},
        verification::{self, Usability},
    },
    error::ApiError,
    verification::hash_token,
};

/// Result of a successful verification request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum VerifyOutcome {
    /// The address was verified now.
    Verified,
    /// It had been verified before; nothing changed.
    AlreadyVerified,
}

/// The verification a token belongs to, with its user.
async fn find_by_token(
    conn: &impl ConnectionTrait,
    token: &str,
) -> Result<Option<(verification::Model, user::Model)>, ApiError> {
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let Some(found) = verification::Entity::find()
        .filter(verification::Column::TokenHash.eq(hash_token(token)))
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    let user = user::Entity::find_by_id(found.user_id).one(conn).await?;
    Ok(user.map(|user| (found, user)))
}

/// What confirming a link's verification `found` would do for `user` at `now`, without changing
/// anything: `Verified` means it would verify the user now.
fn link_outcome(
    found: &verification::Model,
    user: &user::Model,
    now: DateTime<Utc>,
    max_code_attempts: u32,
) -> Result<VerifyOutcome, ApiError> {
    if user.status == UserStatus::Verified {
        return Ok(VerifyOutcome::AlreadyVerified);
    }
    match found.usability(now, max_code_attempts) {
        // The lock counts wrong codes; it does not stop the link.
        Usability::Usable | Usability::CodeLocked => Ok(VerifyOutcome::Verified),
        Usability::Consumed | Usability::Superseded => Err(ApiError::InvalidToken),
        Usability::Expired => Err(ApiError::VerificationExpired),
    }
}
