//! user-service settings: field names are the lower-cased environment variables.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use common::settings::LogFormat;
use serde::{Deserialize, Serialize};

/// Every tunable of the user-service. Defaults work on a developer machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `DATABASE_URL`: `postgres://…` or `sqlite://file.db?mode=rwc`.
    pub database_url: String,
    /// `DATABASE_MAX_CONNECTIONS`: pool size (SQLite always uses one connection).
    pub database_max_connections: u32,
    /// `HTTP_ADDR`: where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// `PUBLIC_BASE_URL`: base of the links put in mails.
    pub public_base_url: String,
    /// `LOG_FORMAT`: `pretty` or `json`.
    pub log_format: LogFormat,
    /// `MAX_BODY_BYTES`: larger request bodies get 413.
    pub max_body_bytes: usize,
    /// `REQUEST_TIMEOUT`: a request taking longer gets 408.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// `ARGON2_MEMORY_KIB`: argon2id memory cost (OWASP minimum 19456).
    pub argon2_memory_kib: u32,
    /// `ARGON2_ITERATIONS`: argon2id time cost (OWASP minimum 2).
    pub argon2_iterations: u32,
    /// `ARGON2_PARALLELISM`: argon2id lanes.
    pub argon2_parallelism: u32,
    /// `MAX_CONCURRENT_HASHES`: password hashes computed at once (each holds the memory cost);
    /// 0 means the number of CPUs.
    pub max_concurrent_hashes: usize,
    /// `IDEMPOTENCY_TTL`: how long an `Idempotency-Key` response is kept.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// `VERIFICATION_TTL`: lifetime of a verification link and code.
    #[serde(with = "humantime_serde")]
    pub verification_ttl: Duration,
    /// `MAX_CODE_ATTEMPTS`: wrong codes before a verification locks.
    pub max_code_attempts: u32,
    /// `REMINDER_INTERVAL`: time between verification reminders.
    #[serde(with = "humantime_serde")]
    pub reminder_interval: Duration,
    /// `MAX_REMINDERS`: reminders per user at most (0 disables reminders).
    pub max_reminders: u32,
    /// `REMINDER_POLL_INTERVAL`: how often the scheduler looks for due reminders.
    #[serde(with = "humantime_serde")]
    pub reminder_poll_interval: Duration,
    /// `RESEND_MIN_INTERVAL`: minimum time between two accepted resends for one address.
    #[serde(with = "humantime_serde")]
    pub resend_min_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: "sqlite://signup.db?mode=rwc".into(),
            database_max_connections: 10,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base_url: "http://127.0.0.1:8080".into(),
            log_format: LogFormat::Pretty,
            max_body_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(30),
            argon2_memory_kib: argon2::Params::DEFAULT_M_COST,
            argon2_iterations: argon2::Params::DEFAULT_T_COST,
            argon2_parallelism: argon2::Params::DEFAULT_P_COST,
            max_concurrent_hashes: 0,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            verification_ttl: Duration::from_secs(24 * 3600),
            max_code_attempts: 5,
            reminder_interval: Duration::from_secs(24 * 3600),
            max_reminders: 3,
            reminder_poll_interval: Duration::from_secs(1),
            resend_min_interval: Duration::from_secs(60),
        }
    }
}

impl Settings {
    /// Loads defaults → `CONFIG_FILE` → environment, then checks cross-field rules.
    ///
    /// # Errors
    /// A message naming the variable with the bad value.
    pub fn load() -> anyhow::Result<Self> {
        let settings: Self = common::settings::load()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: ranges and URL shapes.
    ///
    /// # Errors
    /// A message naming the variable with the bad value.
    pub fn validate(&self) -> anyhow::Result<()> {
        common::settings::ensure_database_url(&self.database_url)?;
        anyhow::ensure!(
            self.public_base_url.starts_with("http://")
                || self.public_base_url.starts_with("https://"),
            "invalid configuration: PUBLIC_BASE_URL must be an http(s) URL, got {:?}",
            self.public_base_url
        );
        argon2::Params::new(
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
            None,
        )
        .context("invalid configuration: ARGON2_MEMORY_KIB/ARGON2_ITERATIONS/ARGON2_PARALLELISM")?;
        // Durations are added to timestamps in handlers: bound them so that can never overflow.
        const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
        for (name, value) in [
            ("VERIFICATION_TTL", self.verification_ttl),
            ("REMINDER_INTERVAL", self.reminder_interval),
            ("RESEND_MIN_INTERVAL", self.resend_min_interval),
            ("IDEMPOTENCY_TTL", self.idempotency_ttl),
            ("REMINDER_POLL_INTERVAL", self.reminder_poll_interval),
            ("REQUEST_TIMEOUT", self.request_timeout),
        ] {
            anyhow::ensure!(
                value <= MAX_DURATION,
                "invalid configuration: {name} must be at most 10 years, got {}",
                humantime::format_duration(value)
            );
        }
        anyhow::ensure!(
            self.max_code_attempts > 0,
            "invalid configuration: MAX_CODE_ATTEMPTS must be at least 1"
        );
        anyhow::ensure!(
            !self.reminder_interval.is_zero(),
            "invalid configuration: REMINDER_INTERVAL must be positive"
        );
        anyhow::ensure!(
            !self.verification_ttl.is_zero(),
            "invalid configuration: VERIFICATION_TTL must be positive"
        );
        Ok(())
    }
}
