//! Verification secrets: issuing a link token and a six-digit code, stored only as hashes.
//!
//! A verification is issued at registration, on resend and with every reminder; issuing one
//! supersedes the user's older ones, so only the newest link and code work. The plain token and
//! code exist only in the returned [`VerificationDetails`] (which goes into the outbox event for
//! the mail) and are never logged.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::events::VerificationDetails;
use rand::{Rng, RngCore};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait, Statement};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::entity::verification;

/// Random bytes in a link token (256 bits).
const TOKEN_BYTES: usize = 32;

/// Issues a new verification for `user_id`, superseding older ones, inside the caller's
/// transaction. Returns the plain link and code for the event.
///
/// # Errors
/// Any database error.
pub(crate) async fn issue_verification(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    now: DateTime<Utc>,
    ttl: Duration,
    public_base_url: &str,
) -> Result<VerificationDetails, DbErr> {
    conn.execute_raw(Statement::from_sql_and_values(
        conn.get_database_backend(),
        "UPDATE verifications SET superseded_at = $1 \
         WHERE user_id = $2 AND superseded_at IS NULL AND consumed_at IS NULL",
        [now.into(), user_id.into()],
    ))
    .await?;

    let id = Uuid::now_v7();
    let (token, code) = {
        let mut rng = rand::rng();
        let mut token = [0u8; TOKEN_BYTES];
        rng.fill_bytes(&mut token);
        (
            hex::encode(token),
            format!("{:06}", rng.random_range(0..1_000_000)),
        )
    };
    let expires_at = now
        + chrono::Duration::from_std(ttl)
            .map_err(|e| DbErr::Custom(format!("VERIFICATION_TTL: {e}")))?;
    verification::Entity::insert(verification::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        token_hash: Set(hash_token(&token)),
        code_hash: Set(hash_code(id, &code)),
        created_at: Set(now),
        expires_at: Set(expires_at),
        attempts: Set(0),
        consumed_at: Set(None),
        superseded_at: Set(None),
    })
    .exec_without_returning(conn)
    .await?;

    Ok(VerificationDetails {
        link: format!(
            "{}/user/verify?token={token}",
            public_base_url.trim_end_matches('/')
        ),
        code,
        expires_at,
    })
}

/// SHA-256 (hex) of a link token: the token has 256 bits of entropy, so a fast hash is enough.
pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// SHA-256 (hex) of a code keyed by its verification id, so equal codes of different
/// verifications have different hashes.
pub(crate) fn hash_code(verification_id: Uuid, code: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(verification_id.as_bytes());
    hasher.update(code.as_bytes());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_hashes_depend_on_the_verification() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_ne!(hash_code(a, "123456"), hash_code(b, "123456"));
        assert_eq!(hash_code(a, "123456"), hash_code(a, "123456"));
        assert_eq!(hash_token("abc").len(), 64);
    }
}
