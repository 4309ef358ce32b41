//! Verification secrets: issuing a link token and a six-digit code, stored only as hashes.
//!
//! A verification is issued at registration, on resend and with every reminder; issuing one
//! supersedes the user's older ones, so only the newest link and code work. The plain token and
//! code exist only in the returned [`VerificationDetails`] (which goes into the outbox event for
//! the mail) and are never logged.
//!
//! The token has 256 bits of entropy, so its SHA-256 is enough. A code has only a million
//! values: its stored hash is an HMAC under [`CodeKey`], a server secret kept outside the
//! database (`CODE_HMAC_KEY`), so a database dump alone does not reveal any code.

use std::{fmt, sync::OnceLock, time::Duration};

use chrono::{DateTime, Utc};
use common::events::VerificationDetails;
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait, Statement};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{entity::verification, settings::Settings};

/// Random bytes in a link token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Shortest accepted `CODE_HMAC_KEY`, in bytes.
pub(crate) const MIN_CODE_KEY_BYTES: usize = 32;

/// The HMAC key of code hashes (`CODE_HMAC_KEY`, at least 32 bytes). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeKey(String);

impl CodeKey {
    /// A key from its text (`CODE_HMAC_KEY`); [`Settings`] validation checks its length.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key used when `CODE_HMAC_KEY` is unset: random, one per process. Codes then stop
    /// working on restart and differ between instances (links keep working), hence the warning
    /// at start-up.
    pub(crate) fn per_process() -> &'static Self {
        static KEY: OnceLock<CodeKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            Self(hex::encode(bytes))
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The key's bytes, for the HMACs of `crate::phone::code`.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// HMAC-SHA256 (hex) of a code, keyed by this key and bound to its verification id, so equal
    /// codes of different verifications have different hashes.
    pub(crate) fn hash_code(&self, verification_id: Uuid, code: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(verification_id.as_bytes());
        mac.update(code.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeKey([redacted])")
    }
}

impl<'de> Deserialize<'de> for CodeKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

/// Only so that settings can be layered (the default is no key); never logged.
impl Serialize for CodeKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Issues a new verification for an existing user (resend, reminder), superseding its older
/// ones, inside the caller's transaction. Returns the plain link and code for the event, as
/// [`issue_first_verification`] does.
///
/// # Errors
/// Any database error.
pub(crate) async fn issue_verification(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Result<VerificationDetails, DbErr> {
    conn.execute_raw(Statement::from_sql_and_values(
        conn.get_database_backend(),
        "UPDATE verifications SET superseded_at = $1 \
         WHERE user_id = $2 AND superseded_at IS NULL AND consumed_at IS NULL",
        [now.into(), user_id.into()],
    ))
    .await?;
    issue_first_verification(conn, user_id, now, settings).await
}

/// Issues the first verification of a user inserted in the caller's transaction: such a user
/// has no older verification, so there is nothing to supersede (one statement less per
/// registration than [`issue_verification`]). Returns the plain link and code for the event.
/// The link works for `VERIFICATION_TTL`, the code for the shorter `CODE_TTL`.
///
/// # Errors
/// Any database error.
pub(crate) async fn issue_first_verification(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Result<VerificationDetails, DbErr> {
    let (row, details) = first_verification(user_id, now, settings)?;
    verification::Entity::insert(row)
        .exec_without_returning(conn)
        .await?;
    Ok(details)
}

/// The row of a new verification of `user_id` (random link token and code, stored hashed) and
/// the plain link and code for the event; [`issue_first_verification`] inserts it.
///
/// # Errors
/// A TTL too large for a date.
pub(crate) fn first_verification(
    user_id: Uuid,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Result<(verification::ActiveModel, VerificationDetails), DbErr> {
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
    let after = |ttl: Duration, name: &str| {
        chrono::Duration::from_std(ttl)
            .map(|ttl| now + ttl)
            .map_err(|e| DbErr::Custom(format!("{name}: {e}")))
    };
    let expires_at = after(settings.verification_ttl, "VERIFICATION_TTL")?;
    let code_expires_at = after(settings.code_ttl, "CODE_TTL")?.min(expires_at);
    let row = verification::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        token_hash: Set(hash_token(&token)),
        code_hash: Set(settings.code_key().hash_code(id, &code)),
        created_at: Set(now),
        expires_at: Set(expires_at),
        code_expires_at: Set(Some(code_expires_at)),
        attempts: Set(0),
        consumed_at: Set(None),
        superseded_at: Set(None),
    };
    let details = VerificationDetails {
        link: format!(
            "{}/user/verify?token={token}",
            settings.public_base_url.trim_end_matches('/')
        ),
        code,
        expires_at,
        code_expires_at: Some(code_expires_at),
    };
    Ok((row, details))
}

/// SHA-256 (hex) of a link token: the token has 256 bits of entropy, so a fast hash is enough.
pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_hashes_depend_on_the_verification_and_the_key() {
        let key = CodeKey::new("k".repeat(32));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_ne!(key.hash_code(a, "123456"), key.hash_code(b, "123456"));
        assert_eq!(key.hash_code(a, "123456"), key.hash_code(a, "123456"));
        let other = CodeKey::new("o".repeat(32));
        assert_ne!(key.hash_code(a, "123456"), other.hash_code(a, "123456"));
        // Not the old unkeyed SHA-256(id || code).
        let mut unkeyed = Sha256::new();
        unkeyed.update(a.as_bytes());
        unkeyed.update(b"123456");
        assert_ne!(key.hash_code(a, "123456"), hex::encode(unkeyed.finalize()));
        assert_eq!(hash_token("abc").len(), 64);
    }

    #[test]
    fn debug_output_hides_the_key() {
        let key = CodeKey::new("supersecretkeymaterial-0123456789");
        assert!(!format!("{key:?}").contains("supersecret"));
        assert!(!format!("{:?}", Some(key)).contains("supersecret"));
    }
}
