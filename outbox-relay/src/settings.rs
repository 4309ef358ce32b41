//! outbox-relay settings: field names are the lower-cased environment variables.

use std::{net::SocketAddr, time::Duration};

use common::settings::{
    ConnectionUrl, LogFormat, SettingsError, Validate, ensure, ensure_amqp_url, ensure_database_url,
};
use serde::{Deserialize, Serialize};

/// Batch pipelines beyond those that fill `RELAY_MAX_IN_FLIGHT` (see
/// [`Settings::concurrent_batches`]).
pub(crate) const SPARE_PIPELINES: u32 = 2;

/// Every tunable of the relay. Defaults work on a developer machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `DATABASE_URL`: the user-service database (`postgres://…` or `sqlite://…`; printed
    /// without its password).
    pub database_url: ConnectionUrl,
    /// `AMQP_URL`: the RabbitMQ broker (printed without its password).
    pub amqp_url: ConnectionUrl,
    /// `AMQP_NAMESPACE`: prefix for every exchange and queue name (tests, side-by-side stacks).
    pub amqp_namespace: String,
    /// `AMQP_CONNECTION_NAME`: the connection name shown by the broker (`rabbitmqctl`, UI).
    pub amqp_connection_name: String,
    /// `RELAY_BATCH_SIZE`: rows claimed, published and marked per transaction.
    pub relay_batch_size: u32,
    /// `RELAY_MAX_IN_FLIGHT`: unconfirmed publishes per relay process at most, shared by its
    /// batch pipelines (see [`Settings::concurrent_batches`]).
    pub relay_max_in_flight: u32,
    /// `RELAY_POLL_INTERVAL`: fallback poll when no wake-up arrives.
    #[serde(with = "humantime_serde")]
    pub relay_poll_interval: Duration,
    /// `RELAY_CONFIRM_TIMEOUT`: a publish not confirmed within this time stays pending.
    #[serde(with = "humantime_serde")]
    pub relay_confirm_timeout: Duration,
    /// `RELAY_STALL_TIMEOUT`: a batch running longer than this means the relay is stuck
    /// (`GET /health/live` answers 503, so an orchestrator restarts it). Unset: the larger of
    /// 60 s and twice `RELAY_CONFIRM_TIMEOUT` (see [`Settings::stall_timeout`]).
    #[serde(with = "humantime_serde")]
    pub relay_stall_timeout: Option<Duration>,
    /// `RELAY_RETENTION`: published rows older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub relay_retention: Duration,
    /// `RELAY_RETENTION_BATCH`: rows deleted per statement by the retention task.
    pub relay_retention_batch: u32,
    /// `ADMIN_ADDR`: `GET /health/live`, `GET /health/ready`, `GET /metrics`.
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
            database_url: "sqlite://signup.db?mode=rwc".into(),
            amqp_url: common::amqp::DEFAULT_URL.into(),
            amqp_namespace: String::new(),
            amqp_connection_name: "outbox-relay".into(),
            relay_batch_size: 250,
            relay_max_in_flight: 1000,
            relay_poll_interval: Duration::from_millis(500),
            relay_confirm_timeout: Duration::from_secs(10),
            relay_stall_timeout: None,
            relay_retention: Duration::from_secs(24 * 3600),
            relay_retention_batch: 5000,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9101)),
            http_header_read_timeout: common::http::HttpLimits::DEFAULT_HEADER_READ_TIMEOUT,
            http_idle_timeout: common::http::HttpLimits::DEFAULT_IDLE_TIMEOUT,
            http_max_connections: common::http::HttpLimits::DEFAULT_MAX_CONNECTIONS,
            log_format: LogFormat::Pretty,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        ensure_database_url("DATABASE_URL", &self.database_url)?;
        ensure_amqp_url(&self.amqp_url)?;
        self.http_limits().validate()?;
        ensure((1..=10_000).contains(&self.relay_batch_size), || {
            format!(
                "RELAY_BATCH_SIZE must be between 1 and 10000, got {}",
                self.relay_batch_size
            )
        })?;
        ensure((1..=100_000).contains(&self.relay_max_in_flight), || {
            format!(
                "RELAY_MAX_IN_FLIGHT must be between 1 and 100000, got {}",
                self.relay_max_in_flight
            )
        })?;
        ensure(
            self.relay_poll_interval >= Duration::from_millis(10),
            || "RELAY_POLL_INTERVAL must be at least 10ms".into(),
        )?;
        ensure(
            self.relay_confirm_timeout >= Duration::from_millis(100),
            || "RELAY_CONFIRM_TIMEOUT must be at least 100ms".into(),
        )?;
        // A healthy batch waits at most about two confirm timeouts (its permits, then its
        // confirms); anything longer is a hang.
        ensure(
            self.relay_stall_timeout
                .is_none_or(|stall| stall >= self.relay_confirm_timeout * 2),
            || {
                format!(
                    "RELAY_STALL_TIMEOUT must be at least twice RELAY_CONFIRM_TIMEOUT ({})",
                    humantime::format_duration(self.relay_confirm_timeout * 2)
                )
            },
        )?;
        ensure(!self.relay_retention.is_zero(), || {
            "RELAY_RETENTION must be positive".into()
        })?;
        ensure(self.relay_retention_batch > 0, || {
            "RELAY_RETENTION_BATCH must be at least 1".into()
        })
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

    /// `RELAY_STALL_TIMEOUT`, or the larger of 60 s and twice `RELAY_CONFIRM_TIMEOUT`: a
    /// healthy batch, once it holds its share of the window, waits at most one confirm timeout.
    pub fn stall_timeout(&self) -> Duration {
        self.relay_stall_timeout
            .unwrap_or_else(|| (self.relay_confirm_timeout * 2).max(Duration::from_secs(60)))
    }

    /// Batch pipelines: enough to keep `RELAY_MAX_IN_FLIGHT` publishes unconfirmed, plus
    /// [`SPARE_PIPELINES`] that claim or mark while the others publish, so database work never
    /// leaves the window idle (the window itself is a semaphore, so the spares never add to
    /// it). Exactly one on SQLite (no `SKIP LOCKED`, so two claimers would publish the same
    /// rows).
    pub fn concurrent_batches(&self) -> usize {
        if self.database_url.starts_with("sqlite:") {
            return 1;
        }
        let publishing = self.relay_max_in_flight.div_ceil(self.relay_batch_size);
        usize::try_from(publishing.clamp(1, 16) + SPARE_PIPELINES).unwrap_or(1)
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
        assert_eq!(settings.relay_batch_size, 250);
        assert_eq!(settings.concurrent_batches(), 1, "SQLite default");
    }

    #[test]
    fn environment_overrides_defaults() {
        let settings = load(&[
            ("DATABASE_URL", "postgres://localhost/x"),
            ("RELAY_BATCH_SIZE", "100"),
            ("RELAY_MAX_IN_FLIGHT", "250"),
            ("RELAY_POLL_INTERVAL", "2s"),
        ])
        .unwrap();
        assert_eq!(
            settings.concurrent_batches(),
            3 + 2,
            "3 publishing, 2 spare"
        );
        assert_eq!(settings.relay_poll_interval, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("RELAY_BATCH_SIZE", "0"),
            ("RELAY_BATCH_SIZE", "lots"),
            ("RELAY_MAX_IN_FLIGHT", "0"),
            ("RELAY_POLL_INTERVAL", "1ms"),
            ("RELAY_CONFIRM_TIMEOUT", "soon"),
            ("RELAY_RETENTION", "0s"),
            ("RELAY_STALL_TIMEOUT", "5s"),
            ("RELAY_RETENTION_BATCH", "0"),
            ("ADMIN_ADDR", "nowhere"),
            ("DATABASE_URL", "mysql://x"),
            ("AMQP_URL", "http://x"),
        ] {
            let error = load(&[(var, value)]).unwrap_err();
            assert!(
                error.to_string().contains(var),
                "{var}={value} gave {error}"
            );
        }
    }
}
