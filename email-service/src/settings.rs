//! email-service settings: field names are the lower-cased environment variables.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use common::{
    settings::{
        ConnectionUrl, LogFormat, SettingsError, Validate, deserialize_durations, ensure,
        ensure_amqp_url, ensure_database_url, ensure_public_base_url, redact_url,
        serialize_durations,
    },
    topology::Topology,
};
use serde::{Deserialize, Serialize};

use crate::cap::MailCap;

const DEFAULT_RETRY_DELAYS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
];

/// An SMTP URL that may carry credentials; its `Debug` output hides the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SmtpUrl(pub String);

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// Every tunable of the email-service. Defaults work on a developer machine: SQLite inbox, mails
/// written as `.eml` files, RabbitMQ on localhost.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `AMQP_URL`: the RabbitMQ broker (printed without its password).
    pub amqp_url: ConnectionUrl,
    /// `AMQP_NAMESPACE`: prefix of every exchange and queue name (isolates side-by-side stacks).
    pub amqp_namespace: String,
    /// `AMQP_CONNECTION_NAME`: the connection name shown by the broker (`rabbitmqctl`, UI).
    pub amqp_connection_name: String,
    /// `DATABASE_URL`: the inbox database, `postgres://…` or `sqlite://file.db?mode=rwc`
    /// (printed without its password).
    pub database_url: ConnectionUrl,
    /// `DATABASE_MAX_CONNECTIONS`: pool size (SQLite always uses one connection).
    pub database_max_connections: u32,
    /// `SMTP_URL`: `smtp://host:port` (plain), `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS), `smtps://user:pass@host:465` (implicit TLS). Unset: `.eml` files in `MAIL_DIR`.
    /// A user and password are refused without `smtps://` or `tls=required`.
    pub smtp_url: Option<SmtpUrl>,
    /// `SMTP_POOL_SIZE`: SMTP connections kept open and used concurrently.
    pub smtp_pool_size: usize,
    /// `SMTP_TIMEOUT`: bound on connecting and on one whole SMTP transaction.
    #[serde(with = "humantime_serde")]
    pub smtp_timeout: Duration,
    /// `SMTP_BREAKER_THRESHOLD`: consecutive transient send failures (refused, timeout, 4xx)
    /// after which sending pauses until the server answers a probe.
    pub smtp_breaker_threshold: u32,
    /// `SMTP_BREAKER_COOLDOWN`: the first wait before probing a paused server (doubling to
    /// 30 s while probes fail).
    #[serde(with = "humantime_serde")]
    pub smtp_breaker_cooldown: Duration,
    /// `CONSUMER_STALL_TIMEOUT`: a consumer loop neither consuming nor reconnecting for longer
    /// is stuck (`GET /health/live` answers 503). Unset: see [`Settings::consumer_stall_timeout`].
    #[serde(with = "humantime_serde")]
    pub consumer_stall_timeout: Option<Duration>,
    /// `MAIL_DIR`: folder of the `.eml` files when `SMTP_URL` is unset.
    pub mail_dir: PathBuf,
    /// `MAIL_FROM`: the `From` mailbox, e.g. `Signup <no-reply@example.com>`.
    pub mail_from: String,
    /// `PUBLIC_BASE_URL`: the user-service's, the only place verification links may point to:
    /// an event whose link does not start with it (plus `/`) is dead-lettered, never mailed.
    pub public_base_url: String,
    /// `PREFETCH`: unacknowledged deliveries the broker hands this consumer at once.
    pub prefetch: u16,
    /// `MAX_CONCURRENT_SENDS`: deliveries processed (rendered and sent) at the same time.
    pub max_concurrent_sends: usize,
    /// `RETRY_DELAYS`: delays of the retry ladder, e.g. `1s,5s,30s,2m,10m`; the last repeats.
    /// The email-service owns the ladder: it alone declares one retry queue per delay.
    #[serde(
        deserialize_with = "deserialize_durations",
        serialize_with = "serialize_durations"
    )]
    pub retry_delays: Vec<Duration>,
    /// `MAX_ATTEMPTS`: send attempts of one mail before it is dead-lettered.
    pub max_attempts: u32,
    /// `INBOX_RETENTION`: how long inbox rows are kept; must exceed the retry horizon (and a
    /// day while `MAX_MAILS_PER_ADDRESS_PER_DAY` counts them).
    #[serde(with = "humantime_serde")]
    pub inbox_retention: Duration,
    /// `MAX_MAILS_PER_ADDRESS_PER_DAY`: mails one address receives in any 24 hours at most
    /// (`0` or `off`: no cap); the welcome mail is exempt. Extra mails are acked, not sent.
    pub max_mails_per_address_per_day: MailCap,
    /// `ADMIN_ADDR`: health and metrics endpoint.
    pub admin_addr: SocketAddr,
    /// `HTTP_HEADER_READ_TIMEOUT`: request headers must arrive within this long on the admin
    /// port (also bounds the wait for the next request on a keep-alive connection).
    #[serde(with = "humantime_serde")]
    pub http_header_read_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT`: an admin connection with no request in progress for this long is
    /// closed.
    #[serde(with = "humantime_serde")]
    pub http_idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: open admin connections; past it new ones wait to be accepted.
    pub http_max_connections: usize,
    /// `LOG_FORMAT`: `pretty` or `json`.
    pub log_format: LogFormat,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            amqp_url: common::amqp::DEFAULT_URL.into(),
            amqp_namespace: String::new(),
            amqp_connection_name: "email-service".into(),
            database_url: "sqlite://email.db?mode=rwc".into(),
            database_max_connections: 10,
            smtp_url: None,
            smtp_pool_size: 16,
            smtp_timeout: Duration::from_secs(30),
            consumer_stall_timeout: None,
            smtp_breaker_threshold: 5,
            smtp_breaker_cooldown: Duration::from_secs(1),
            mail_dir: PathBuf::from("mail"),
            mail_from: "Signup <no-reply@localhost>".into(),
            public_base_url: "http://127.0.0.1:8080".into(),
            prefetch: 256,
            max_concurrent_sends: 64,
            retry_delays: DEFAULT_RETRY_DELAYS.to_vec(),
            max_attempts: 6,
            inbox_retention: Duration::from_secs(7 * 24 * 3600),
            max_mails_per_address_per_day: MailCap::per_day(10),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9102)),
            http_header_read_timeout: common::http::HttpLimits::DEFAULT_HEADER_READ_TIMEOUT,
            http_idle_timeout: common::http::HttpLimits::DEFAULT_IDLE_TIMEOUT,
            http_max_connections: common::http::HttpLimits::DEFAULT_MAX_CONNECTIONS,
            log_format: LogFormat::Pretty,
        }
    }
}

impl Settings {
    /// The admin port's limits.
    pub fn http_limits(&self) -> common::http::HttpLimits {
        common::http::HttpLimits {
            header_read_timeout: self.http_header_read_timeout,
            idle_timeout: self.http_idle_timeout,
            max_connections: self.http_max_connections,
        }
    }

    /// `CONSUMER_STALL_TIMEOUT`, or the larger of 2 minutes and the longest a healthy consumer
    /// takes to stop (its in-flight sends, `SMTP_TIMEOUT`, plus their acks and publishes).
    pub fn consumer_stall_timeout(&self) -> Duration {
        self.consumer_stall_timeout.unwrap_or_else(|| {
            (self.smtp_timeout + crate::publisher::CHANNEL_TIMEOUT * 3 + Duration::from_secs(30))
                .max(Duration::from_secs(120))
        })
    }

    /// The names in `AMQP_NAMESPACE`, with one retry queue per `RETRY_DELAYS` entry.
    pub fn topology(&self) -> Topology {
        Topology::new(&self.amqp_namespace).with_retry_delays(self.retry_delays.clone())
    }

    /// The longest time a mail can spend in the retry ladder.
    pub fn retry_horizon(&self) -> Duration {
        (1..self.max_attempts).map(|n| self.retry_delay(n)).sum()
    }

    /// Delay before attempt `failed_attempt + 1`, after attempt `failed_attempt` (1-based)
    /// failed: the ladder's entry, the last one repeating.
    pub fn retry_delay(&self, failed_attempt: u32) -> Duration {
        let index = usize::try_from(failed_attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        self.retry_delays
            .get(index)
            .or(self.retry_delays.last())
            .copied()
            .unwrap_or_default()
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        ensure_database_url("DATABASE_URL", &self.database_url)?;
        ensure_amqp_url(&self.amqp_url)?;
        ensure_public_base_url(&self.public_base_url)?;
        self.http_limits().validate()?;
        if let Some(SmtpUrl(url)) = &self.smtp_url
            && let Err(error) = crate::mailer::smtp::Endpoint::parse(url)
        {
            return Err(SettingsError::invalid(format!(
                "SMTP_URL {}: {error:#}",
                redact_url(url)
            )));
        }
        if let Err(error) = self.mail_from.parse::<lettre::message::Mailbox>() {
            return Err(SettingsError::invalid(format!(
                "MAIL_FROM {:?}: {error}",
                self.mail_from
            )));
        }
        ensure(self.smtp_pool_size > 0, || {
            "SMTP_POOL_SIZE must be at least 1".into()
        })?;
        ensure(!self.smtp_timeout.is_zero(), || {
            "SMTP_TIMEOUT must be positive".into()
        })?;
        ensure(self.prefetch > 0, || "PREFETCH must be at least 1".into())?;
        ensure(self.smtp_breaker_threshold > 0, || {
            "SMTP_BREAKER_THRESHOLD must be at least 1".into()
        })?;
        ensure(
            (Duration::from_millis(10)..=Duration::from_secs(30))
                .contains(&self.smtp_breaker_cooldown),
            || "SMTP_BREAKER_COOLDOWN must be between 10ms and 30s".into(),
        )?;
        let stopping = self.smtp_timeout + crate::publisher::CHANNEL_TIMEOUT * 3;
        ensure(
            self.consumer_stall_timeout
                .is_none_or(|stall| stall > stopping),
            || {
                format!(
                    "CONSUMER_STALL_TIMEOUT must exceed SMTP_TIMEOUT + 30s ({})",
                    humantime::format_duration(stopping)
                )
            },
        )?;
        ensure(self.max_concurrent_sends > 0, || {
            "MAX_CONCURRENT_SENDS must be at least 1".into()
        })?;
        ensure(
            !self.retry_delays.is_empty() && self.retry_delays.iter().all(|d| !d.is_zero()),
            || "RETRY_DELAYS must list at least one positive delay".into(),
        )?;
        ensure(self.max_attempts > 0, || {
            "MAX_ATTEMPTS must be at least 1".into()
        })?;
        ensure(self.inbox_retention > self.retry_horizon() * 2, || {
            format!(
                "INBOX_RETENTION ({}) must exceed twice the retry horizon ({}), or a retried \
                 mail could be sent again after its inbox row was purged",
                humantime::format_duration(self.inbox_retention),
                humantime::format_duration(self.retry_horizon())
            )
        })?;
        ensure(
            self.max_mails_per_address_per_day.limit().is_none()
                || self.inbox_retention >= crate::cap::WINDOW,
            || {
                format!(
                    "INBOX_RETENTION ({}) must be at least 24h while \
                     MAX_MAILS_PER_ADDRESS_PER_DAY ({:?}) counts a day of inbox rows",
                    humantime::format_duration(self.inbox_retention),
                    self.max_mails_per_address_per_day
                )
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        common::settings::load_from(common::testing::env_vars(pairs))
    }

    #[test]
    fn defaults_are_valid() {
        let settings = load(&[]).unwrap();
        assert!(settings.smtp_url.is_none());
        assert_eq!(settings.retry_delays.len(), 5);
    }

    #[test]
    fn environment_overrides_defaults() {
        let settings = load(&[
            ("SMTP_URL", "smtp://127.0.0.1:2525"),
            ("RETRY_DELAYS", "200ms,400ms"),
            ("MAX_ATTEMPTS", "4"),
            ("PREFETCH", "10"),
            ("MAX_MAILS_PER_ADDRESS_PER_DAY", "3"),
        ])
        .unwrap();
        assert_eq!(settings.max_mails_per_address_per_day, MailCap::per_day(3));
        assert_eq!(
            load(&[("MAX_MAILS_PER_ADDRESS_PER_DAY", "off")])
                .unwrap()
                .max_mails_per_address_per_day,
            MailCap::OFF
        );
        assert_eq!(
            settings.smtp_url,
            Some(SmtpUrl("smtp://127.0.0.1:2525".into()))
        );
        assert_eq!(settings.retry_delay(1), Duration::from_millis(200));
        assert_eq!(settings.retry_delay(3), Duration::from_millis(400));
        assert_eq!(settings.retry_horizon(), Duration::from_millis(1000));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("SMTP_URL", "ftp://x"),
            ("MAIL_FROM", "not an address"),
            ("MAX_ATTEMPTS", "0"),
            ("RETRY_DELAYS", "soon"),
            ("PREFETCH", "-1"),
            ("INBOX_RETENTION", "1m"),
            ("CONSUMER_STALL_TIMEOUT", "10s"),
            ("SMTP_BREAKER_THRESHOLD", "0"),
            ("SMTP_BREAKER_COOLDOWN", "1h"),
            ("DATABASE_URL", "mysql://x"),
            ("PUBLIC_BASE_URL", "http://signup.example.com"),
            ("SMTP_URL", "smtp://user:secret@smtp.example.com:587"),
            (
                "SMTP_URL",
                "smtp://user:secret@smtp.example.com:587?tls=opportunistic",
            ),
            ("MAX_MAILS_PER_ADDRESS_PER_DAY", "lots"),
        ] {
            let error = load(&[(var, value)]).unwrap_err();
            assert!(
                error.to_string().contains(var),
                "{var}={value} gave {error}"
            );
        }
    }

    #[test]
    fn smtp_credentials_need_implicit_tls_or_required_starttls() {
        for clear in [
            "smtp://user:secret@smtp.example.com:587",
            "smtp://user:secret@smtp.example.com:587?tls=opportunistic",
        ] {
            let error = load(&[("SMTP_URL", clear)]).unwrap_err().to_string();
            assert!(error.contains("SMTP_URL"), "{error}");
            assert!(
                error.contains("smtp.example.com"),
                "names the value: {error}"
            );
            assert!(!error.contains("secret"), "{error}");
            assert!(error.contains("tls=required"), "says what to do: {error}");
        }
        for safe in [
            "smtps://user:secret@smtp.example.com",
            "smtp://user:secret@smtp.example.com:587?tls=required",
            "smtp://127.0.0.1:2525",
            "smtp://relay.internal:25?tls=opportunistic",
        ] {
            assert!(load(&[("SMTP_URL", safe)]).is_ok(), "{safe}");
        }
    }

    #[test]
    fn debug_output_hides_the_smtp_password() {
        let url = SmtpUrl("smtps://user:hunter2@smtp.example.com".into());
        assert!(!format!("{url:?}").contains("hunter2"));
        let destination = crate::mailer::Destination::Smtp {
            url: &url.0,
            pool_size: 1,
            timeout: Duration::from_secs(1),
        };
        let debug = format!("{destination:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("user:***@smtp.example.com"), "{debug}");
    }
}
