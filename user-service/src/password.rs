//! Passwords: the [`Password`] newtype and argon2id hashing off the async threads.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

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

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashError {
    /// Every hashing slot stayed busy for `HASH_QUEUE_TIMEOUT`: the service is overloaded and
    /// the request is refused (503) instead of queueing without bound.
    #[error("every password hashing slot stayed busy")]
    Overloaded,
    /// Hashing failed (it should not), the stored hash is unreadable or the task panicked.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Argon2id hashing with a bound on concurrent hashes (each holds `ARGON2_MEMORY_KIB` of memory)
/// and on the wait for a free slot.
///
/// The slot (a semaphore permit) is moved into the blocking task and released when the hash is
/// done, not when the request's future is dropped: a client that disconnects mid-hash cannot
/// free its slot for another hash while its own still runs, so at most `MAX_CONCURRENT_HASHES`
/// hashes ever run (`password_hashes_in_progress` shows how many do).
#[derive(Clone)]
pub(crate) struct PasswordHasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl PasswordHasher {
    /// A hasher with the given argon2id cost; `max_concurrent` 0 means one per CPU; a request
    /// waits at most `queue_timeout` for a slot.
    ///
    /// # Errors
    /// When the cost parameters are out of range.
    pub(crate) fn new(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        max_concurrent: usize,
        queue_timeout: Duration,
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
            queue_timeout,
        })
    }

    /// Hashes `password` to a PHC string on the blocking pool, keeping the current span.
    ///
    /// # Errors
    /// [`HashError::Overloaded`] when no slot frees up within the queue timeout; `Failed` when
    /// hashing fails (it should not) or the blocking task panics.
    pub(crate) async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let argon2 = self.argon2.clone();
        let password = password.0.clone();
        self.run_blocking(tracing::info_span!("hash_password"), move || {
            argon2
                .hash_password(password.expose_secret().as_bytes())
                .map(|hash| hash.to_string())
                .context("argon2 hashing failed")
        })
        .await
    }

    /// Checks `password` against a stored PHC string (its own parameters apply).
    ///
    /// # Errors
    /// [`HashError::Overloaded`] as for [`hash`](Self::hash); `Failed` when the stored hash
    /// cannot be parsed or the blocking task panics.
    pub(crate) async fn verify(&self, password: &Password, phc: &str) -> Result<bool, HashError> {
        let argon2 = self.argon2.clone();
        let password = password.0.clone();
        let phc = phc.to_owned();
        self.run_blocking(tracing::Span::current(), move || {
            let parsed = PasswordHash::new(&phc).context("stored hash")?;
            Ok(argon2
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }

    /// Waits (bounded) for a slot, then runs `work` on the blocking pool in `span`, holding the
    /// slot until `work` returns, even if the caller stops waiting for it.
    async fn run_blocking<T: Send + 'static>(
        &self,
        span: tracing::Span,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        let permit =
            match tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
                .await
            {
                Ok(permit) => permit.context("hasher closed")?,
                Err(_) => {
                    metrics::counter!("password_hash_overloaded_total").increment(1);
                    return Err(HashError::Overloaded);
                }
            };
        let task = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let running = Running::start();
            let result = work();
            // Uncounted before the slot frees, so the gauge never shows more than the cap.
            drop(running);
            drop(permit);
            result
        });
        Ok(task.await.context("password hashing task failed")??)
    }
}

/// `password_hashes_in_progress` counts this hash while it lives (also if `work` panics).
struct Running;

impl Running {
    fn start() -> Self {
        metrics::gauge!("password_hashes_in_progress").increment(1.0);
        Self
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        metrics::gauge!("password_hashes_in_progress").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verifiable() {
        let hasher = PasswordHasher::new(1024, 1, 1, 0, Duration::from_secs(1)).unwrap();
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
