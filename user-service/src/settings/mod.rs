//! user-service settings: field names are the lower-cased environment variables. The phone
//! verification's own types and rules are in `phone`.

mod phone;

pub use phone::{CountryList, PhoneRegion};

use std::{net::SocketAddr, time::Duration};

use common::http::HttpLimits;
use common::settings::{
    ConnectionUrl, LogFormat, SettingsError, Validate, ensure, ensure_database_url,
    ensure_public_base_url,
};
use serde::{Deserialize, Serialize};

use crate::{
    rate_limit::RateLimit,
    verification::{CodeKey, MIN_CODE_KEY_BYTES},
};

/// Every tunable of the user-service. Defaults work on a developer machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `DATABASE_URL`: `postgres://…` or `sqlite://file.db?mode=rwc` (printed without its
    /// password).
    pub database_url: ConnectionUrl,
    /// `DATABASE_MAX_CONNECTIONS`: pool size (SQLite always uses one connection).
    pub database_max_connections: u32,
    /// `HTTP_ADDR`: where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// `ADMIN_ADDR`: health and Prometheus metrics (`GET /metrics` is not on the API port: its
    /// counters would tell a client which addresses have accounts). Keep it off the internet.
    pub admin_addr: SocketAddr,
    /// `HTTP_HEADER_READ_TIMEOUT`: an HTTP/1 request's headers must arrive within this long
    /// (also bounds the wait for the next request on a keep-alive connection), and on the API a
    /// request body within as long again. Both listeners.
    #[serde(with = "humantime_serde")]
    pub http_header_read_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT`: a connection with no request in progress for this long is closed.
    #[serde(with = "humantime_serde")]
    pub http_idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: open connections per listener; past it new ones wait to be
    /// accepted.
    pub http_max_connections: usize,
    /// `MAX_CONCURRENT_REQUESTS`: API requests in progress at once; the next gets 503
    /// `overloaded` with `Retry-After` at once.
    pub max_concurrent_requests: usize,
    /// `PUBLIC_BASE_URL`: base of the links put in mails; `https://`, or `http://` on a loopback
    /// host only.
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
    /// `ARGON2_ALLOW_WEAK`: accept argon2 costs below OWASP's floor (tests and benchmarks only;
    /// refused otherwise).
    pub argon2_allow_weak: bool,
    /// `MAX_CONCURRENT_HASHES`: password hashes computed at once (each holds the memory cost);
    /// 0 means the number of CPUs.
    pub max_concurrent_hashes: usize,
    /// `HASH_QUEUE_TIMEOUT`: how long a request waits for a hashing slot before it gets 503
    /// `overloaded` with `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub hash_queue_timeout: Duration,
    /// `IDEMPOTENCY_TTL`: how long an `Idempotency-Key` response is kept.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// `VERIFICATION_TTL`: lifetime of a verification link.
    #[serde(with = "humantime_serde")]
    pub verification_ttl: Duration,
    /// `CODE_TTL`: lifetime of a verification code (at most `VERIFICATION_TTL`).
    #[serde(with = "humantime_serde")]
    pub code_ttl: Duration,
    /// `MAX_CODE_ATTEMPTS`: wrong codes before a verification locks.
    pub max_code_attempts: u32,
    /// `MAX_WRONG_CODES_PER_DAY`: wrong codes per account per 24 hours, whatever the number of
    /// verifications issued; after that every code of the account is refused (the link works).
    pub max_wrong_codes_per_day: u32,
    /// `CODE_HMAC_KEY`: secret key (at least 32 bytes) of the stored code hashes, kept outside
    /// the database. Unset: a random key per process (codes stop working on restart).
    pub code_hmac_key: Option<CodeKey>,
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
    /// `MAX_RESENDS_PER_DAY`: accepted resends per address per 24 hours; more are answered 202
    /// and send nothing.
    pub max_resends_per_day: u32,
    /// `MIN_RESPONSE_TIME`: resend and code verification answer no sooner than this, so their
    /// timing does not tell whether an address has an account.
    #[serde(with = "humantime_serde")]
    pub min_response_time: Duration,
    /// `RATE_LIMIT_REGISTER`: registrations per client address, `N/period` or `off`.
    pub rate_limit_register: RateLimit,
    /// `RATE_LIMIT_VERIFY`: verification requests (link page and POST) per client address.
    pub rate_limit_verify: RateLimit,
    /// `RATE_LIMIT_RESEND`: resend requests per client address.
    pub rate_limit_resend: RateLimit,
    /// `TRUST_FORWARDED_FOR`: take the client address from the last `X-Forwarded-For` entry
    /// (only behind a reverse proxy that sets it).
    pub trust_forwarded_for: bool,
    /// `PENDING_ACCOUNT_TTL`: an account still unverified this long after sign-up is deleted
    /// with its verifications, and the address can sign up again.
    #[serde(with = "humantime_serde")]
    pub pending_account_ttl: Duration,
    /// `PENDING_ACCOUNT_SWEEP_INTERVAL`: how often expired pending accounts are looked for.
    #[serde(with = "humantime_serde")]
    pub pending_account_sweep_interval: Duration,
    /// `SIGNUP_ATTEMPT_NOTICE_INTERVAL`: at most one "someone tried to sign up with your
    /// address" mail per address in this time.
    #[serde(with = "humantime_serde")]
    pub signup_attempt_notice_interval: Duration,
    /// `PHONE_DEFAULT_REGION`: ISO 3166 alpha-2 region of numbers given without `+` (national
    /// format); empty: numbers must start with `+`.
    pub phone_default_region: PhoneRegion,
    /// `PHONE_CODE_LENGTH`: digits of an SMS code (6 to 10).
    pub phone_code_length: u32,
    /// `PHONE_CODE_TTL`: lifetime of an SMS code; resends within it send the same code.
    #[serde(with = "humantime_serde")]
    pub phone_code_ttl: Duration,
    /// `PHONE_CODE_MAX_ATTEMPTS`: checks of one code; the last wrong one ends the verification
    /// (`max_attempts_reached`).
    pub phone_code_max_attempts: u32,
    /// `PHONE_MAX_SENDS`: SMS per verification (the first and its resends).
    pub phone_max_sends: u32,
    /// `PHONE_RESEND_COOLDOWN`: minimum time between two SMS of one verification.
    #[serde(with = "humantime_serde")]
    pub phone_resend_cooldown: Duration,
    /// `SMS_ALLOWED_COUNTRIES`: regions SMS may go to (`GB,IE`); empty: all.
    pub sms_allowed_countries: CountryList,
    /// `PHONE_BLOCK_VOIP`: refuse VoIP numbers (premium-rate, shared-cost, toll-free, pager,
    /// voicemail, UAN and personal numbers are always refused).
    pub phone_block_voip: bool,
    /// `PHONE_SENDS_PER_NUMBER_PER_HOUR`: send requests per number per hour.
    pub phone_sends_per_number_per_hour: u32,
    /// `PHONE_PREFIX_STRIP_DIGITS`: a number's prefix is the number without this many last
    /// digits (a number range).
    pub phone_prefix_strip_digits: u32,
    /// `PHONE_SENDS_PER_PREFIX_PER_HOUR`: send requests per prefix per hour.
    pub phone_sends_per_prefix_per_hour: u32,
    /// `PHONE_SENDS_PER_IP_PER_HOUR`: send requests per client address per hour.
    pub phone_sends_per_ip_per_hour: u32,
    /// `PHONE_SENDS_GLOBAL_PER_HOUR`: send requests of the whole service per hour.
    pub phone_sends_global_per_hour: u32,
    /// `PHONE_MAX_FAILED_CHECKS`: failed code checks per number in `PHONE_FAILED_CHECKS_WINDOW`,
    /// across its verifications; past it checks answer `max_attempts_reached` unevaluated.
    pub phone_max_failed_checks: u32,
    /// `PHONE_FAILED_CHECKS_WINDOW`: the window of `PHONE_MAX_FAILED_CHECKS`.
    #[serde(with = "humantime_serde")]
    pub phone_failed_checks_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: "sqlite://signup.db?mode=rwc".into(),
            database_max_connections: 10,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9100)),
            http_header_read_timeout: HttpLimits::DEFAULT_HEADER_READ_TIMEOUT,
            http_idle_timeout: HttpLimits::DEFAULT_IDLE_TIMEOUT,
            http_max_connections: HttpLimits::DEFAULT_MAX_CONNECTIONS,
            max_concurrent_requests: 256,
            public_base_url: "http://127.0.0.1:8080".into(),
            log_format: LogFormat::Pretty,
            max_body_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(30),
            argon2_memory_kib: argon2::Params::DEFAULT_M_COST,
            argon2_iterations: argon2::Params::DEFAULT_T_COST,
            argon2_parallelism: argon2::Params::DEFAULT_P_COST,
            argon2_allow_weak: false,
            max_concurrent_hashes: 0,
            hash_queue_timeout: Duration::from_secs(2),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            verification_ttl: Duration::from_secs(24 * 3600),
            code_ttl: Duration::from_secs(3600),
            max_code_attempts: 5,
            max_wrong_codes_per_day: 10,
            code_hmac_key: None,
            reminder_interval: Duration::from_secs(24 * 3600),
            max_reminders: 3,
            reminder_poll_interval: Duration::from_secs(1),
            resend_min_interval: Duration::from_secs(60),
            max_resends_per_day: 5,
            min_response_time: Duration::from_millis(250),
            rate_limit_register: RateLimit::per(20, Duration::from_secs(60)),
            rate_limit_verify: RateLimit::per(30, Duration::from_secs(60)),
            rate_limit_resend: RateLimit::per(10, Duration::from_secs(60)),
            trust_forwarded_for: false,
            pending_account_ttl: Duration::from_secs(7 * 24 * 3600),
            pending_account_sweep_interval: Duration::from_secs(60),
            signup_attempt_notice_interval: Duration::from_secs(24 * 3600),
            phone_default_region: PhoneRegion::NONE,
            phone_code_length: 6,
            phone_code_ttl: Duration::from_secs(600),
            phone_code_max_attempts: 3,
            phone_max_sends: 5,
            phone_resend_cooldown: Duration::from_secs(30),
            sms_allowed_countries: CountryList::default(),
            phone_block_voip: true,
            phone_sends_per_number_per_hour: 5,
            phone_prefix_strip_digits: 3,
            phone_sends_per_prefix_per_hour: 20,
            phone_sends_per_ip_per_hour: 10,
            phone_sends_global_per_hour: 1000,
            phone_max_failed_checks: 100,
            phone_failed_checks_window: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl Settings {
    /// The limits of both listeners.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            header_read_timeout: self.http_header_read_timeout,
            idle_timeout: self.http_idle_timeout,
            max_connections: self.http_max_connections,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        ensure_database_url("DATABASE_URL", &self.database_url)?;
        ensure_public_base_url(&self.public_base_url)?;
        if let Err(error) = argon2::Params::new(
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
            None,
        ) {
            return Err(SettingsError::invalid(format!(
                "ARGON2_MEMORY_KIB/ARGON2_ITERATIONS/ARGON2_PARALLELISM: {error}"
            )));
        }
        ensure(
            self.argon2_allow_weak
                || meets_owasp_floor(self.argon2_memory_kib, self.argon2_iterations),
            || {
                format!(
                    "ARGON2_MEMORY_KIB={} with ARGON2_ITERATIONS={} is below OWASP's minimum \
                     (19456 KiB x 2, 12288 x 3, 9216 x 4, 7168 x 5 or 47104 x 1); \
                     ARGON2_ALLOW_WEAK=true allows it for tests",
                    self.argon2_memory_kib, self.argon2_iterations
                )
            },
        )?;
        if let Some(key) = &self.code_hmac_key {
            ensure(key.len() >= MIN_CODE_KEY_BYTES, || {
                format!(
                    "CODE_HMAC_KEY must be at least {MIN_CODE_KEY_BYTES} bytes, got {} \
                     (e.g. `openssl rand -hex 32`)",
                    key.len()
                )
            })?;
        }
        // Durations are added to timestamps in handlers: bound them so that can never overflow.
        const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
        for (name, value) in [
            ("VERIFICATION_TTL", self.verification_ttl),
            ("CODE_TTL", self.code_ttl),
            ("MIN_RESPONSE_TIME", self.min_response_time),
            ("REMINDER_INTERVAL", self.reminder_interval),
            ("RESEND_MIN_INTERVAL", self.resend_min_interval),
            ("IDEMPOTENCY_TTL", self.idempotency_ttl),
            ("REMINDER_POLL_INTERVAL", self.reminder_poll_interval),
            ("REQUEST_TIMEOUT", self.request_timeout),
            ("PENDING_ACCOUNT_TTL", self.pending_account_ttl),
            (
                "PENDING_ACCOUNT_SWEEP_INTERVAL",
                self.pending_account_sweep_interval,
            ),
            (
                "SIGNUP_ATTEMPT_NOTICE_INTERVAL",
                self.signup_attempt_notice_interval,
            ),
            ("HASH_QUEUE_TIMEOUT", self.hash_queue_timeout),
        ] {
            ensure(value <= MAX_DURATION, || {
                format!(
                    "{name} must be at most 10 years, got {}",
                    humantime::format_duration(value)
                )
            })?;
        }
        ensure(!self.hash_queue_timeout.is_zero(), || {
            "HASH_QUEUE_TIMEOUT must be positive, got 0s".into()
        })?;
        ensure(self.max_concurrent_requests > 0, || {
            "MAX_CONCURRENT_REQUESTS must be at least 1, got 0".into()
        })?;
        self.http_limits().validate()?;
        ensure(self.max_code_attempts > 0, || {
            "MAX_CODE_ATTEMPTS must be at least 1".into()
        })?;
        ensure(!self.reminder_interval.is_zero(), || {
            "REMINDER_INTERVAL must be positive".into()
        })?;
        ensure(!self.verification_ttl.is_zero(), || {
            "VERIFICATION_TTL must be positive".into()
        })?;
        ensure(
            !self.code_ttl.is_zero() && self.code_ttl <= self.verification_ttl,
            || {
                format!(
                    "CODE_TTL must be positive and at most VERIFICATION_TTL ({}), got {}",
                    humantime::format_duration(self.verification_ttl),
                    humantime::format_duration(self.code_ttl)
                )
            },
        )?;
        ensure(self.max_wrong_codes_per_day > 0, || {
            "MAX_WRONG_CODES_PER_DAY must be at least 1".into()
        })?;
        ensure(self.max_resends_per_day > 0, || {
            "MAX_RESENDS_PER_DAY must be at least 1".into()
        })?;
        // A pending account must outlive the link mailed at sign-up, or that link dies early.
        ensure(self.pending_account_ttl >= self.verification_ttl, || {
            format!(
                "PENDING_ACCOUNT_TTL ({}) must be at least VERIFICATION_TTL ({})",
                humantime::format_duration(self.pending_account_ttl),
                humantime::format_duration(self.verification_ttl)
            )
        })?;
        ensure(!self.pending_account_sweep_interval.is_zero(), || {
            "PENDING_ACCOUNT_SWEEP_INTERVAL must be positive".into()
        })?;
        ensure(!self.signup_attempt_notice_interval.is_zero(), || {
            "SIGNUP_ATTEMPT_NOTICE_INTERVAL must be positive".into()
        })?;
        phone::validate(self)
    }
}

impl Settings {
    /// The key of code hashes: `CODE_HMAC_KEY`, or the per-process random key.
    pub(crate) fn code_key(&self) -> &CodeKey {
        self.code_hmac_key
            .as_ref()
            .unwrap_or_else(|| CodeKey::per_process())
    }
}

/// OWASP's password storage cheat sheet: argon2id with m=47104 KiB/t=1, 19456/2, 12288/3,
/// 9216/4 or 7168/5 (p=1); each has memory x time of at least 35840 KiB.
fn meets_owasp_floor(memory_kib: u32, iterations: u32) -> bool {
    memory_kib >= 7168 && u64::from(memory_kib) * u64::from(iterations) >= 35_840
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(settings: &Settings) -> String {
        settings.validate().unwrap_err().to_string()
    }

    #[test]
    fn argon2_costs_below_the_owasp_floor_are_refused_unless_allowed() {
        let weak = Settings {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            ..Settings::default()
        };
        assert!(
            problem(&weak).contains("ARGON2_MEMORY_KIB=1024"),
            "{}",
            problem(&weak)
        );
        assert!(
            Settings {
                argon2_allow_weak: true,
                ..weak
            }
            .validate()
            .is_ok()
        );
        for (memory_kib, iterations) in [(19456, 2), (47104, 1), (12288, 3), (9216, 4), (7168, 5)] {
            assert!(
                meets_owasp_floor(memory_kib, iterations),
                "{memory_kib}x{iterations}"
            );
        }
        assert!(!meets_owasp_floor(19456, 1));
        assert!(!meets_owasp_floor(4096, 10));
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn code_settings_are_checked() {
        let longer_code = Settings {
            code_ttl: Duration::from_secs(2 * 24 * 3600),
            ..Settings::default()
        };
        assert!(problem(&longer_code).contains("CODE_TTL"));
        let short_key = Settings {
            code_hmac_key: Some(CodeKey::new("too-short")),
            ..Settings::default()
        };
        let message = problem(&short_key);
        assert!(
            message.contains("CODE_HMAC_KEY must be at least 32 bytes, got 9"),
            "{message}"
        );
        assert!(
            !message.contains("too-short"),
            "the key is not echoed: {message}"
        );
        let no_cap = Settings {
            max_wrong_codes_per_day: 0,
            ..Settings::default()
        };
        assert!(problem(&no_cap).contains("MAX_WRONG_CODES_PER_DAY"));
    }

    #[test]
    fn debug_output_hides_the_code_key() {
        let settings = Settings {
            code_hmac_key: Some(CodeKey::new("0123456789abcdef0123456789abcdef-secret")),
            ..Settings::default()
        };
        assert!(!format!("{settings:?}").contains("-secret"));
    }
}

#[cfg(test)]
mod public_base_url_tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        common::settings::load_from(common::testing::env_vars(pairs))
    }

    #[test]
    fn a_plain_http_public_base_url_is_refused_unless_loopback() {
        let error = load(&[("PUBLIC_BASE_URL", "http://signup.example.com")]).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("PUBLIC_BASE_URL") && text.contains("http://signup.example.com"),
            "{text}"
        );
        assert!(load(&[("PUBLIC_BASE_URL", "https://signup.example.com")]).is_ok());
        assert!(load(&[("PUBLIC_BASE_URL", "http://localhost:8080")]).is_ok());
        assert!(load(&[]).is_ok(), "the default is loopback");
    }

    #[test]
    fn squatting_settings_have_defaults_and_refuse_bad_values_by_name() {
        let settings = load(&[]).unwrap();
        assert_eq!(
            settings.pending_account_ttl,
            Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(
            settings.signup_attempt_notice_interval,
            Duration::from_secs(24 * 3600)
        );
        let short = load(&[("PENDING_ACCOUNT_TTL", "1h")])
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("PENDING_ACCOUNT_TTL (1h)") && short.contains("VERIFICATION_TTL (1day)"),
            "{short}"
        );
        for (var, value) in [
            ("PENDING_ACCOUNT_TTL", "soon"),
            ("PENDING_ACCOUNT_SWEEP_INTERVAL", "0s"),
            ("SIGNUP_ATTEMPT_NOTICE_INTERVAL", "0s"),
            ("SIGNUP_ATTEMPT_NOTICE_INTERVAL", "20years"),
        ] {
            let error = load(&[(var, value)]).unwrap_err().to_string();
            assert!(error.contains(var), "{var}={value} gave {error}");
        }
    }
}
