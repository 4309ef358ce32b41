//! Passwords: the [`Password`] newtype and argon2id hashing off the async threads.

use std::sync::Arc;

use anyhow::Context;
use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Shortest accepted password, in characters.
pub(crate) const MIN_PASSWORD_CHARS: u64 = 8;
/// Longest accepted password, in characters: bounds the hashing work one request can cause.
pub(crate) const MAX_PASSWORD_CHARS: u64 = 128;

/// A password that satisfied the length policy. Its `Debug` never shows it.
#[derive(Debug, Clone)]
pub(crate) struct Password(SecretString);

impl Password {
    /// Wraps a password already checked against the policy (see `register`).
    pub(crate) fn new_unchecked(password: String) -> Self {
        Self(SecretString::from(password))
    }
}

/// Argon2id hashing with a bound on concurrent hashes (each holds `ARGON2_MEMORY_KIB` of memory).
#[derive(Clone)]
pub(crate) struct PasswordHasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
}

impl PasswordHasher {
    /// A hasher with the given argon2id cost; `max_concurrent` 0 means one per CPU.
    ///
    /// # Errors
    /// When the cost parameters are out of range.
    pub(crate) fn new(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        max_concurrent: usize,
    ) -> anyhow::Result<Self> {
        let params =
            Params::new(memory_kib, iterations, parallelism, None).context("argon2 parameters")?;
        let max_concurrent = if max_concurrent == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            max_concurrent
        };
        Ok(Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            permits: Arc::new(Semaphore::new(max_concurrent)),
        })
    }

    /// Hashes `password` to a PHC string on the blocking pool, keeping the current span.
    ///
    /// # Errors
    /// When hashing fails (it should not) or the blocking task panics.
    pub(crate) async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        let argon2 = self.argon2.clone();
        let password = password.0.clone();
        let span = tracing::info_span!("hash_password");
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            argon2
                .hash_password(password.expose_secret().as_bytes())
                .map(|hash| hash.to_string())
                .context("argon2 hashing failed")
        })
        .await
        .context("password hashing task failed")?
    }

    /// Checks `password` against a stored PHC string (its own parameters apply).
    ///
    /// # Errors
    /// When the stored hash cannot be parsed or the blocking task panics.
    pub(crate) async fn verify(&self, password: &Password, phc: &str) -> anyhow::Result<bool> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        let argon2 = self.argon2.clone();
        let password = password.0.clone();
        let phc = phc.to_owned();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let parsed = PasswordHash::new(&phc).context("stored hash")?;
            Ok(argon2
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok())
        })
        .instrument(tracing::Span::current())
        .await
        .context("password verification task failed")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verifiable() {
        let hasher = PasswordHasher::new(1024, 1, 1, 0).unwrap();
        let password = Password::new_unchecked("correct horse battery".into());
        let first = hasher.hash(&password).await.unwrap();
        let second = hasher.hash(&password).await.unwrap();
        assert!(
            first.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
            "{first}"
        );
        assert_ne!(first, second, "each hash has its own salt");
        assert!(hasher.verify(&password, &first).await.unwrap());
        let wrong = Password::new_unchecked("wrong password".into());
        assert!(!hasher.verify(&wrong, &first).await.unwrap());
    }

    #[test]
    fn debug_output_hides_the_password() {
        let password = Password::new_unchecked("hunter2hunter2".into());
        assert!(!format!("{password:?}").contains("hunter2"));
    }
}
