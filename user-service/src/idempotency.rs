//! `Idempotency-Key` for `POST /user/register`.
//!
//! The first successful response for a key is stored in the registration transaction. A retry
//! with the same key and the same request gets that response again (no second user, no second
//! event); the same key with another request gets 422 `idempotency_key_reused`.
//!
//! "Same request" is decided without keeping a fast hash of the password (that would undo
//! argon2): the fingerprint covers email, names and phone, and the replay in `routes::register` checks
//! the password against the argon2 hash of the user the stored response created.
//!
//! Keys are scoped to the request's email: the stored key is a hash of the email and the key,
//! so one client's key never collides with (or reveals) another's. Expired keys are purged a few
//! at a time whenever a key is stored, so the table holds about the keys of one
//! `IDEMPOTENCY_TTL`.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, SqlErr, Statement,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    domain::{NewUser, UserEmail},
    entity::idempotency_key,
    error::ApiError,
};

#[cfg(test)]
mod tests;

const HEADER: &str = "idempotency-key";
const MAX_KEY_LEN: usize = 255;

/// Expired keys deleted with each stored key: more than one, so a backlog shrinks.
const PURGE_BATCH: u32 = 10;

/// A syntactically valid key: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Reads the optional header.
    ///
    /// # Errors
    /// [`ApiError::InvalidHeader`] for an empty, too long or non-ASCII key.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(None);
        };
        let text = value.to_str().unwrap_or_default();
        if text.is_empty()
            || text.len() > MAX_KEY_LEN
            || !text.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ApiError::InvalidHeader {
                name: "Idempotency-Key",
                reason: "must be 1 to 255 visible ASCII characters",
            });
        }
        Ok(Some(Self(text.to_owned())))
    }
}

fn fingerprint(new_user: &NewUser) -> String {
    let mut hasher = Sha256::new();
    for part in [
        Some(new_user.email.as_str()),
        new_user.first_name.as_deref(),
        new_user.last_name.as_deref(),
    ] {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ; None differs from "".
        match part {
            Some(text) => {
                hasher.update((text.len() as u64 + 1).to_be_bytes());
                hasher.update(text.as_bytes());
            }
            None => hasher.update(0u64.to_be_bytes()),
        }
    }
    // Only with a phone, so the fingerprints of requests without one stay what they were.
    if let Some(phone) = &new_user.phone {
        hasher.update(b"phone");
        hasher.update(phone.e164().as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The stored form of `key` for `email`: SHA-256 (hex) of both, length-prefixed.
fn scoped(key: &IdempotencyKey, email: &UserEmail) -> String {
    let mut hasher = Sha256::new();
    hasher.update((email.as_str().len() as u64).to_be_bytes());
    hasher.update(email.as_str().as_bytes());
    hasher.update(key.0.as_bytes());
    hex::encode(hasher.finalize())
}

/// The unexpired stored response for `key` sent with `email`, if any.
///
/// # Errors
/// Database errors.
pub(crate) async fn find(
    conn: &impl ConnectionTrait,
    key: &IdempotencyKey,
    email: &UserEmail,
    now: DateTime<Utc>,
) -> Result<Option<idempotency_key::Model>, ApiError> {
    Ok(idempotency_key::Entity::find_by_id(scoped(key, email))
        .filter(idempotency_key::Column::ExpiresAt.gt(now))
        .one(conn)
        .await?)
}

/// Stores the response for `key` (scoped to the request's email) in the caller's transaction,
/// and purges a few expired keys.
///
/// # Errors
/// Database errors; a concurrent request that stored the same key first makes this fail with a
/// unique violation, and the caller answers with that request's response instead.
pub(crate) async fn store<T: Serialize>(
    conn: &impl ConnectionTrait,
    key: &IdempotencyKey,
    new_user: &NewUser,
    status: StatusCode,
    response: &T,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<(), ApiError> {
    // Also replaces an expired row of this very key. Rows another registration is purging are
    // skipped, so concurrent registrations never wait on (or deadlock over) each other's purge.
    // `expires_at >= '-infinity'` (always true) bounds the range, so the generic plan cached
    // while the table is new and small probes `idempotency_keys_expiry` rather than a hash semi
    // join seq-scanning every key on each keyed registration, until an ANALYZE. (SQLite compares
    // the ISO text: every timestamp sorts after it.)
    let backend = conn.get_database_backend();
    let lock = common::database::skip_locked(backend);
    conn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "DELETE FROM idempotency_keys WHERE key IN \
             (SELECT key FROM idempotency_keys WHERE expires_at <= $1 AND expires_at >= '-infinity' \
             LIMIT $2{lock})"
        ),
        [now.into(), i64::from(PURGE_BATCH).into()],
    ))
    .await?;
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let row = idempotency_key::ActiveModel {
        key: Set(scoped(key, &new_user.email)),
        request_hash: Set(fingerprint(new_user)),
        response_status: Set(i32::from(status.as_u16())),
        response_body: Set(serde_json::to_string(response).map_err(anyhow::Error::from)?),
        created_at: Set(now),
        expires_at: Set(expires_at),
    };
    idempotency_key::Entity::insert(row)
        .exec_without_returning(conn)
        .await
        .map_err(|error| match error.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => ApiError::IdempotencyKeyReused,
            _ => ApiError::from(error),
        })?;
    Ok(())
}

/// Whether `new_user` has the email and names of the request stored under the key.
pub(crate) fn has_fingerprint_of(stored: &idempotency_key::Model, new_user: &NewUser) -> bool {
    stored.request_hash == fingerprint(new_user)
}
