//! webhook-service settings: field names are the lower-cased environment variables.
//!
//! - `sms`: the SMS settings' types and their validation.

mod sms;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use common::settings::{
    ConnectionUrl, LogFormat, SettingsError, Validate, deserialize_durations, ensure,
    ensure_amqp_url, ensure_database_url, serialize_durations,
};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use sms::{SmsBodyEncoding, SmsGateway, SmsHeaders, SmsSecret};

/// Svix's schedule after the first, immediate attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
const DEFAULT_RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// How much longer than the retry horizon `WEBHOOK_ATTEMPT_RETENTION` must be: a delivery's
/// attempts outlive its last retry by at least this (to look at them, or recover it).
const RETENTION_PAST_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// `WEBHOOK_API_TOKEN`: the bearer token of the management and job API. `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiToken(pub String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

/// Every tunable of the webhook-service. Defaults work on a developer machine: SQLite database,
/// RabbitMQ on localhost, API on loopback without a token, every private network refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `AMQP_URL`: the RabbitMQ broker (printed without its password).
    pub amqp_url: ConnectionUrl,
    /// `AMQP_NAMESPACE`: prefix of every exchange and queue name (isolates side-by-side stacks).
    pub amqp_namespace: String,
    /// `AMQP_CONNECTION_NAME`: the connection name shown by the broker.
    pub amqp_connection_name: String,
    /// `PREFETCH`: unacknowledged events the broker hands this consumer at once.
    pub prefetch: u16,
    /// `DATABASE_URL`: `postgres://…` or `sqlite://file.db?mode=rwc` (printed without its
    /// password). Several instances share one PostgreSQL database; SQLite is for one process.
    pub database_url: ConnectionUrl,
    /// `DATABASE_MAX_CONNECTIONS`: pool size (SQLite always uses one connection).
    pub database_max_connections: u32,
    /// `HTTP_ADDR`: the API, `/openapi.json`, `/health/*` and `/metrics`.
    pub http_addr: SocketAddr,
    /// `HTTP_HEADER_READ_TIMEOUT`: request headers (and bodies) must arrive within this long.
    #[serde(with = "humantime_serde")]
    pub http_header_read_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT`: a connection with no request in progress for this long is closed.
    #[serde(with = "humantime_serde")]
    pub http_idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: open connections; past it new ones wait to be accepted.
    pub http_max_connections: usize,
    /// `WEBHOOK_API_TOKEN`: bearer token required by `/v1/…`. Unset: the API only listens on
    /// loopback (`HTTP_ADDR` must be a loopback address) and says so at start-up.
    pub webhook_api_token: Option<ApiToken>,
    /// `WEBHOOK_ALLOWED_NETS`: comma-separated CIDRs exempt from the SSRF guard (e.g.
    /// `127.0.0.0/8,::1/128` for local receivers). Empty: every loopback, private, link-local,
    /// CGNAT, multicast and unspecified address is refused.
    #[serde(
        deserialize_with = "deserialize_nets",
        serialize_with = "serialize_nets"
    )]
    pub webhook_allowed_nets: Vec<IpNet>,
    /// `WEBHOOK_RETRY_SCHEDULE`: delays after the first (immediate) attempt, e.g. `5s,5m,30m`;
    /// one more attempt per entry, each delay jittered.
    #[serde(
        deserialize_with = "deserialize_durations",
        serialize_with = "serialize_durations"
    )]
    pub webhook_retry_schedule: Vec<Duration>,
    /// `WEBHOOK_FAIL_STATUSES`: comma-separated 4xx statuses that fail a delivery at once
    /// instead of being retried (the default retries every 4xx but 410).
    #[serde(
        deserialize_with = "deserialize_statuses",
        serialize_with = "serialize_statuses"
    )]
    pub webhook_fail_statuses: Vec<u16>,
    /// `WEBHOOK_RETRY_AFTER_CAP`: the longest `Retry-After` (429/503) honoured; a longer one
    /// waits this long.
    #[serde(with = "humantime_serde")]
    pub webhook_retry_after_cap: Duration,
    /// `WEBHOOK_CONNECT_TIMEOUT`: bound on DNS + TCP + TLS of one attempt.
    #[serde(with = "humantime_serde")]
    pub webhook_connect_timeout: Duration,
    /// `WEBHOOK_REQUEST_TIMEOUT`: default bound on one whole attempt (a job may set its own, up
    /// to `WEBHOOK_MAX_REQUEST_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub webhook_request_timeout: Duration,
    /// `WEBHOOK_MAX_REQUEST_TIMEOUT`: the largest per-request timeout a job may ask for.
    #[serde(with = "humantime_serde")]
    pub webhook_max_request_timeout: Duration,
    /// `WEBHOOK_MAX_BODY_BYTES`: the largest request body a job may carry.
    pub webhook_max_body_bytes: usize,
    /// `WEBHOOK_MAX_IN_FLIGHT`: outbound calls in progress at once in this process.
    pub webhook_max_in_flight: usize,
    /// `WEBHOOK_ENDPOINT_CONCURRENCY`: calls in progress at once to one endpoint, so one slow
    /// receiver cannot starve the others.
    pub webhook_endpoint_concurrency: usize,
    /// `WEBHOOK_DISABLE_AFTER`: an endpoint failing continuously for this long is disabled.
    #[serde(with = "humantime_serde")]
    pub webhook_disable_after: Duration,
    /// `WEBHOOK_SECRET_ROTATION_GRACE`: after a secret rotation, the old secret also signs
    /// for this long.
    #[serde(with = "humantime_serde")]
    pub webhook_secret_rotation_grace: Duration,
    /// `WEBHOOK_ATTEMPT_RETENTION`: attempts, finished deliveries, their jobs and messages older
    /// than this are purged. At least the retry horizon (the sum of `WEBHOOK_RETRY_SCHEDULE`)
    /// plus a day, so a delivery still being retried keeps its attempt log.
    #[serde(with = "humantime_serde")]
    pub webhook_attempt_retention: Duration,
    /// `SMS_GATEWAY`: `file` (one file per SMS in `SMS_DIR`), `twilio` or `http`.
    pub sms_gateway: SmsGateway,
    /// `SMS_DIR`: the folder of the `file` gateway (created when the first SMS is written).
    pub sms_dir: PathBuf,
    /// `SMS_APP_NAME`: `{app}` in `SMS_TEMPLATE`.
    pub sms_app_name: String,
    /// `SMS_TEMPLATE`: the text; `{app}`, `{code}` (required) and `{minutes}` (until the code
    /// expires, rounded up) are replaced.
    pub sms_template: String,
    /// `SMS_FROM`: the sender (`twilio`: `From`, a number or alphanumeric sender id).
    pub sms_from: Option<String>,
    /// `SMS_RETRY_SCHEDULE`: delays after the first attempt of an SMS; no attempt starts after
    /// the code's expiry whatever is left of it.
    #[serde(
        deserialize_with = "deserialize_durations",
        serialize_with = "serialize_durations"
    )]
    pub sms_retry_schedule: Vec<Duration>,
    /// `SMS_TWILIO_BASE_URL`: the Messages API's origin (a compatible API or a test fake).
    pub sms_twilio_base_url: String,
    /// `SMS_TWILIO_ACCOUNT_SID`: the account (path and basic-auth user).
    pub sms_twilio_account_sid: Option<String>,
    /// `SMS_TWILIO_AUTH_TOKEN`: basic-auth password. `Debug` hides it.
    pub sms_twilio_auth_token: Option<SmsSecret>,
    /// `SMS_TWILIO_MESSAGING_SERVICE_SID`: sent as `MessagingServiceSid` (instead of, or with,
    /// `SMS_FROM`).
    pub sms_twilio_messaging_service_sid: Option<String>,
    /// `SMS_HTTP_URL`: the `http` gateway's URL (printed without secrets).
    pub sms_http_url: Option<ConnectionUrl>,
    /// `SMS_HTTP_METHOD`: the `http` gateway's method.
    pub sms_http_method: String,
    /// `SMS_HTTP_HEADERS`: `Name: value; Name: value` ([`SmsHeaders`]). `Debug` hides values.
    pub sms_http_headers: SmsHeaders,
    /// `SMS_HTTP_BODY`: the `http` gateway's body; `{to}` and `{text}` are replaced, escaped by
    /// `SMS_HTTP_BODY_ENCODING`.
    pub sms_http_body: String,
    /// `SMS_HTTP_BODY_ENCODING`: `json`, `form` or `raw`.
    pub sms_http_body_encoding: SmsBodyEncoding,
    /// `LOG_FORMAT`: `pretty` or `json`.
    pub log_format: LogFormat,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            amqp_url: common::amqp::DEFAULT_URL.into(),
            amqp_namespace: String::new(),
            amqp_connection_name: "webhook-service".into(),
            prefetch: 256,
            database_url: "sqlite://webhook.db?mode=rwc".into(),
            database_max_connections: 10,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8090)),
            http_header_read_timeout: common::http::HttpLimits::DEFAULT_HEADER_READ_TIMEOUT,
            http_idle_timeout: common::http::HttpLimits::DEFAULT_IDLE_TIMEOUT,
            http_max_connections: common::http::HttpLimits::DEFAULT_MAX_CONNECTIONS,
            webhook_api_token: None,
            webhook_allowed_nets: Vec::new(),
            webhook_retry_schedule: DEFAULT_RETRY_SCHEDULE.to_vec(),
            webhook_fail_statuses: Vec::new(),
            webhook_retry_after_cap: Duration::from_secs(3600),
            webhook_connect_timeout: Duration::from_secs(5),
            webhook_request_timeout: Duration::from_secs(15),
            webhook_max_request_timeout: Duration::from_secs(60),
            webhook_max_body_bytes: 256 * 1024,
            webhook_max_in_flight: 256,
            webhook_endpoint_concurrency: 8,
            webhook_disable_after: Duration::from_secs(5 * 24 * 3600),
            webhook_secret_rotation_grace: Duration::from_secs(24 * 3600),
            webhook_attempt_retention: Duration::from_secs(30 * 24 * 3600),
            sms_gateway: SmsGateway::File,
            sms_dir: PathBuf::from("sms"),
            sms_app_name: "Signup".into(),
            sms_template: sms::DEFAULT_SMS_TEMPLATE.into(),
            sms_from: None,
            sms_retry_schedule: sms::DEFAULT_SMS_RETRY_SCHEDULE.to_vec(),
            sms_twilio_base_url: "https://api.twilio.com".into(),
            sms_twilio_account_sid: None,
            sms_twilio_auth_token: None,
            sms_twilio_messaging_service_sid: None,
            sms_http_url: None,
            sms_http_method: "POST".into(),
            sms_http_headers: SmsHeaders::default(),
            sms_http_body: sms::DEFAULT_SMS_HTTP_BODY.into(),
            sms_http_body_encoding: SmsBodyEncoding::Json,
            log_format: LogFormat::Pretty,
        }
    }
}

impl Settings {
    /// The API port's limits.
    pub fn http_limits(&self) -> common::http::HttpLimits {
        common::http::HttpLimits {
            header_read_timeout: self.http_header_read_timeout,
            idle_timeout: self.http_idle_timeout,
            max_connections: self.http_max_connections,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        ensure_database_url("DATABASE_URL", &self.database_url)?;
        ensure_amqp_url(&self.amqp_url)?;
        self.http_limits().validate()?;
        ensure(self.prefetch > 0, || "PREFETCH must be at least 1".into())?;
        ensure(
            self.webhook_api_token.is_some() || self.http_addr.ip().is_loopback(),
            || {
                format!(
                    "HTTP_ADDR {} is not a loopback address: set WEBHOOK_API_TOKEN, or the \
                     management API would be open to the network",
                    self.http_addr
                )
            },
        )?;
        if let Some(ApiToken(token)) = &self.webhook_api_token {
            ensure(token.len() >= 16, || {
                format!(
                    "WEBHOOK_API_TOKEN must be at least 16 characters, got {}",
                    token.len()
                )
            })?;
        }
        ensure(self.webhook_retry_schedule.len() <= 50, || {
            "WEBHOOK_RETRY_SCHEDULE has more than 50 delays".into()
        })?;
        if let Some(status) = self
            .webhook_fail_statuses
            .iter()
            .find(|s| !(400..500).contains(*s))
        {
            return Err(SettingsError::invalid(format!(
                "WEBHOOK_FAIL_STATUSES: {status} is not a 4xx status"
            )));
        }
        for (name, value) in [
            ("WEBHOOK_CONNECT_TIMEOUT", self.webhook_connect_timeout),
            ("WEBHOOK_REQUEST_TIMEOUT", self.webhook_request_timeout),
            (
                "WEBHOOK_MAX_REQUEST_TIMEOUT",
                self.webhook_max_request_timeout,
            ),
            ("WEBHOOK_DISABLE_AFTER", self.webhook_disable_after),
        ] {
            ensure(!value.is_zero(), || format!("{name} must be positive"))?;
        }
        ensure(
            self.webhook_request_timeout <= self.webhook_max_request_timeout,
            || "WEBHOOK_REQUEST_TIMEOUT must not exceed WEBHOOK_MAX_REQUEST_TIMEOUT".into(),
        )?;
        let horizon = self
            .webhook_retry_schedule
            .iter()
            .fold(Duration::ZERO, |sum, &delay| sum.saturating_add(delay));
        ensure(
            self.webhook_attempt_retention >= horizon.saturating_add(RETENTION_PAST_HORIZON),
            || {
                format!(
                    "WEBHOOK_ATTEMPT_RETENTION ({}) must be at least the retry horizon, the sum \
                     of WEBHOOK_RETRY_SCHEDULE ({}), plus a day",
                    humantime::format_duration(self.webhook_attempt_retention),
                    humantime::format_duration(horizon)
                )
            },
        )?;
        ensure(self.webhook_max_in_flight > 0, || {
            "WEBHOOK_MAX_IN_FLIGHT must be at least 1".into()
        })?;
        ensure(self.webhook_endpoint_concurrency > 0, || {
            "WEBHOOK_ENDPOINT_CONCURRENCY must be at least 1".into()
        })?;
        ensure(self.webhook_max_body_bytes > 0, || {
            "WEBHOOK_MAX_BODY_BYTES must be at least 1".into()
        })?;
        sms::validate(self)
    }
}

/// Text items separated by commas (or a list, from a settings file), blanks dropped.
fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        List(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::Text(text) => text.split(',').map(str::to_owned).collect(),
        Raw::List(list) => list,
    }
    .into_iter()
    .map(|item| item.trim().to_owned())
    .filter(|item| !item.is_empty())
    .collect())
}

/// `127.0.0.0/8,::1/128`; a bare address means that one address.
fn deserialize_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    comma_list(d)?
        .iter()
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("{item:?} is not a CIDR network")))
        })
        .collect()
}

fn serialize_nets<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    let text: Vec<String> = nets.iter().map(ToString::to_string).collect();
    s.serialize_str(&text.join(","))
}

fn deserialize_statuses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    comma_list(d)?
        .iter()
        .map(|item| {
            item.parse::<u16>()
                .map_err(|_| serde::de::Error::custom(format!("{item:?} is not an HTTP status")))
        })
        .collect()
}

fn serialize_statuses<S: Serializer>(statuses: &[u16], s: S) -> Result<S::Ok, S::Error> {
    let text: Vec<String> = statuses.iter().map(ToString::to_string).collect();
    s.serialize_str(&text.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        common::settings::load_from(common::testing::env_vars(pairs))
    }

    #[test]
    fn lists_parse_from_the_environment() {
        let settings = load(&[
            ("WEBHOOK_ALLOWED_NETS", "127.0.0.0/8, ::1"),
            ("WEBHOOK_RETRY_SCHEDULE", "1s,2m"),
            ("WEBHOOK_FAIL_STATUSES", "400,422"),
        ])
        .expect("valid settings");
        assert_eq!(
            settings.webhook_allowed_nets,
            vec![
                "127.0.0.0/8".parse::<IpNet>().expect("net"),
                "::1/128".parse::<IpNet>().expect("net")
            ]
        );
        assert_eq!(
            settings.webhook_retry_schedule,
            vec![Duration::from_secs(1), Duration::from_secs(120)]
        );
        assert_eq!(settings.webhook_fail_statuses, vec![400, 422]);
    }

    #[test]
    fn bad_values_are_named() {
        let error =
            load(&[("WEBHOOK_ALLOWED_NETS", "10.0.0.0/8,localhost")]).expect_err("not a network");
        assert!(
            error.to_string().contains("\"localhost\" is not a CIDR"),
            "{error}"
        );
        let error = load(&[("WEBHOOK_FAIL_STATUSES", "500")]).expect_err("not 4xx");
        assert!(error.to_string().contains("500 is not a 4xx"), "{error}");
        let error = load(&[("HTTP_ADDR", "0.0.0.0:8090")]).expect_err("open API");
        assert!(error.to_string().contains("WEBHOOK_API_TOKEN"), "{error}");
        load(&[
            ("HTTP_ADDR", "0.0.0.0:8090"),
            ("WEBHOOK_API_TOKEN", "0123456789abcdef-token"),
        ])
        .expect("a token opens the API to the network");
    }

    #[test]
    fn retention_must_outlast_the_retry_horizon_by_a_day() {
        let error = load(&[
            ("WEBHOOK_RETRY_SCHEDULE", "1h,2h"),
            ("WEBHOOK_ATTEMPT_RETENTION", "1day"),
        ])
        .expect_err("a retention shorter than the horizon plus a day");
        let message = error.to_string();
        assert!(
            message.contains("WEBHOOK_ATTEMPT_RETENTION (1day)") && message.contains("(3h)"),
            "{message}"
        );
        load(&[
            ("WEBHOOK_RETRY_SCHEDULE", "1h,2h"),
            ("WEBHOOK_ATTEMPT_RETENTION", "27h"),
        ])
        .expect("exactly the horizon plus a day");
        let error = load(&[("WEBHOOK_ATTEMPT_RETENTION", "2days")]).expect_err("default schedule");
        assert!(
            error
                .to_string()
                .contains("WEBHOOK_RETRY_SCHEDULE (1day 3h 35m 5s)"),
            "{error}"
        );
        load(&[]).expect("the defaults are consistent");
    }
}
