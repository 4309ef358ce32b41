//! Layered settings: built-in defaults → optional file → environment variables.
//!
//! Each service declares a `Settings` struct whose field names are the lower-cased environment
//! variable names (`database_url` ← `DATABASE_URL`), whose `Default` holds the built-in
//! defaults and whose [`Validate`] checks what serde cannot (ranges, URL shapes). [`load`]
//! layers an optional file (`CONFIG_FILE`, TOML) and the environment on top, deserialises and
//! validates the result; a bad value stops start-up with a message naming the variable.

use std::{collections::HashMap, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};

/// Environment variable naming an optional TOML settings file.
pub const CONFIG_FILE_VAR: &str = "CONFIG_FILE";

/// Invalid configuration; the message names the variable and the bad value's problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct SettingsError(String);

impl SettingsError {
    /// `invalid configuration: <problem>`; the problem starts with the variable's name
    /// (`"RELAY_BATCH_SIZE must be between 1 and 10000, got 0"`).
    pub fn invalid(problem: impl Into<String>) -> Self {
        Self(problem.into())
    }
}

/// `Ok` when `ok`, else [`SettingsError::invalid`] with `problem`, which names the variable.
///
/// # Errors
/// When `ok` is false.
pub fn ensure(ok: bool, problem: impl FnOnce() -> String) -> Result<(), SettingsError> {
    if ok {
        Ok(())
    } else {
        Err(SettingsError::invalid(problem()))
    }
}

/// What serde cannot check about a settings struct: ranges, URL shapes, combinations.
pub trait Validate {
    /// # Errors
    /// [`SettingsError`] naming the variable whose value cannot be used.
    fn validate(&self) -> Result<(), SettingsError>;
}

/// Loads `T` from its defaults, `CONFIG_FILE` and the process environment, and validates it.
///
/// # Errors
/// [`SettingsError`] naming the variable whose value cannot be used.
pub fn load<T: DeserializeOwned + Serialize + Default + Validate>() -> Result<T, SettingsError> {
    load_from(std::env::vars().collect())
}

/// Like [`load`], with an explicit environment (tests use this instead of mutating the process
/// environment).
///
/// # Errors
/// [`SettingsError`] naming the variable whose value cannot be used.
pub fn load_from<T: DeserializeOwned + Serialize + Default + Validate>(
    env: HashMap<String, String>,
) -> Result<T, SettingsError> {
    let settings: T = deserialize_from(env)?;
    settings.validate()?;
    Ok(settings)
}

fn deserialize_from<T: DeserializeOwned + Serialize + Default>(
    env: HashMap<String, String>,
) -> Result<T, SettingsError> {
    let defaults = config::Config::try_from(&T::default()).map_err(describe)?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(file) = env.get(CONFIG_FILE_VAR).filter(|f| !f.is_empty()) {
        builder = builder.add_source(config::File::with_name(file).required(true));
    }
    // Empty variables count as unset, so `FOO=` in a .env file falls back to the default.
    let env: HashMap<String, String> = env.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    builder
        .add_source(config::Environment::default().source(Some(env)))
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(describe)
}

fn describe(error: config::ConfigError) -> SettingsError {
    use config::ConfigError;
    let key = match &error {
        ConfigError::Type { key: Some(key), .. } | ConfigError::At { key: Some(key), .. } => {
            Some(key.to_uppercase())
        }
        _ => None,
    };
    match (key, error) {
        (Some(key), ConfigError::At { error, .. }) => SettingsError(format!("{key}: {error}")),
        (Some(key), error) => SettingsError(format!("{key}: {error}")),
        (None, error) => SettingsError(error.to_string()),
    }
}

/// Checks that `variable` (`DATABASE_URL`, `EMAIL_DATABASE_URL`) names a supported database.
///
/// # Errors
/// A message naming the variable.
pub fn ensure_database_url(variable: &str, url: &str) -> Result<(), SettingsError> {
    let supported = ["postgres://", "postgresql://", "sqlite:"]
        .iter()
        .any(|scheme| url.starts_with(scheme));
    ensure(supported, || {
        format!(
            "{variable} must start with postgres:// or sqlite:, got {}",
            redact_url(url)
        )
    })
}

/// Checks that `AMQP_URL` is an AMQP URL.
///
/// # Errors
/// A message naming the variable.
pub fn ensure_amqp_url(url: &str) -> Result<(), SettingsError> {
    ensure(
        url.starts_with("amqp://") || url.starts_with("amqps://"),
        || {
            format!(
                "AMQP_URL must start with amqp:// or amqps://, got {}",
                redact_url(url)
            )
        },
    )
}

/// Checks that `PUBLIC_BASE_URL` is an `https://` URL, or `http://` on a loopback host
/// (127.0.0.0/8, `::1`, `localhost`): the links in mails carry secrets, and a plain-HTTP link
/// would hand them to anyone on the path.
///
/// # Errors
/// A message naming the variable and the value.
pub fn ensure_public_base_url(url: &str) -> Result<(), SettingsError> {
    let problem = |why: &str| SettingsError::invalid(format!("PUBLIC_BASE_URL {why}, got {url:?}"));
    let parsed = url::Url::parse(url).map_err(|e| problem(&format!("is not a URL ({e})")))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" if parsed.host().is_some() => {}
        "http" if loopback => {}
        "http" => {
            return Err(problem(
                "must start with https:// (http:// only for a loopback host: 127.0.0.0/8, ::1, \
                 localhost)",
            ));
        }
        _ => return Err(problem("must be an https:// URL")),
    }
    ensure(
        parsed.query().is_none() && parsed.fragment().is_none(),
        || format!("PUBLIC_BASE_URL must have no query or fragment, got {url:?}"),
    )
}

/// Log output format (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when a terminal.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A list of durations written as `1s,5s,30s` (humantime units).
///
/// # Errors
/// A deserialisation error naming the element that does not parse.
pub fn deserialize_durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        List(Vec<String>),
    }
    let items = match Raw::deserialize(d)? {
        Raw::Text(text) => text.split(',').map(str::to_owned).collect(),
        Raw::List(list) => list,
    };
    items
        .iter()
        .map(|item| {
            humantime::parse_duration(item.trim())
                .map_err(|e| serde::de::Error::custom(format!("{item:?} is not a duration: {e}")))
        })
        .collect()
}

/// Serialises durations as `1s,5s` (the inverse of [`deserialize_durations`]).
///
/// # Errors
/// Never, for a well-behaved serializer.
pub fn serialize_durations<S: serde::Serializer>(
    value: &[Duration],
    s: S,
) -> Result<S::Ok, S::Error> {
    let text: Vec<String> = value
        .iter()
        .map(|d| humantime::format_duration(*d).to_string())
        .collect();
    s.serialize_str(&text.join(","))
}

/// `scheme://user:***@host/…?password=***`: a URL safe to log. The password of the user info
/// and the value of every query parameter that names a secret (`password`, `sslpassword`,
/// `secret`, `token`, …: drivers accept credentials there too) are replaced.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut redacted = match (base.find("://"), base.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &base[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &base[..scheme_end + 3], &base[at..]),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((name, _)) if names_a_secret(name) => format!("{name}=***"),
                _ => parameter.to_owned(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&parameters.join("&"));
    }
    redacted
}

fn names_a_secret(parameter: &str) -> bool {
    let name = parameter.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "auth"]
        .iter()
        .any(|word| name.contains(word))
}

/// A connection URL (`DATABASE_URL`, `AMQP_URL`, …) that may carry a password. `Debug` and
/// `Display` print it through [`redact_url`], so a settings struct holding one can be logged
/// whole; the URL itself is read with [`expose`](Self::expose) or through `Deref` (a
/// `&ConnectionUrl` goes wherever a `&str` is expected). Serialised as the plain string: the
/// environment variable and config-file formats are unchanged.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionUrl(String);

impl ConnectionUrl {
    /// The URL as configured, password included: for the driver, never for a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ConnectionUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for ConnectionUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for ConnectionUrl {
    fn from(url: &str) -> Self {
        Self(url.to_owned())
    }
}

impl From<ConnectionUrl> for String {
    fn from(url: ConnectionUrl) -> Self {
        url.0
    }
}

impl std::fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl std::fmt::Display for ConnectionUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Example {
        http_addr: SocketAddr,
        batch_size: u32,
        #[serde(with = "humantime_serde")]
        poll_interval: Duration,
        #[serde(
            deserialize_with = "deserialize_durations",
            serialize_with = "serialize_durations"
        )]
        delays: Vec<Duration>,
        log_format: LogFormat,
    }

    impl Validate for Example {
        fn validate(&self) -> Result<(), SettingsError> {
            ensure(self.batch_size > 0, || {
                "BATCH_SIZE must be at least 1".into()
            })
        }
    }

    impl Default for Example {
        fn default() -> Self {
            Self {
                http_addr: "127.0.0.1:8080".parse().unwrap(),
                batch_size: 10,
                poll_interval: Duration::from_millis(500),
                delays: vec![Duration::from_secs(1)],
                log_format: LogFormat::Pretty,
            }
        }
    }

    #[test]
    fn redact_url_hides_the_password_only() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/t"),
            "postgres://postgres@127.0.0.1/t"
        );
        assert_eq!(
            redact_url("postgres://db/users?sslmode=require&password=hunter2&sslpassword=x"),
            "postgres://db/users?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(
            redact_url("postgres://u:p%40ss@db/users?application_name=a"),
            "postgres://u:***@db/users?application_name=a"
        );
    }

    #[test]
    fn connection_url_prints_without_its_password_but_keeps_it() {
        let url = ConnectionUrl::from("postgres://signup:hunter2@db:5432/users?password=hunter3");
        for printed in [format!("{url:?}"), format!("{url}"), format!("{url:#?}")] {
            assert!(!printed.contains("hunter"), "{printed}");
            assert!(printed.contains("signup:***@db:5432/users"), "{printed}");
        }
        assert_eq!(
            url.expose(),
            "postgres://signup:hunter2@db:5432/users?password=hunter3"
        );
        assert!(url.starts_with("postgres://"));
        // The wire format is the plain string.
        assert_eq!(
            serde_json::to_value(&url).unwrap(),
            serde_json::json!(url.expose())
        );
    }

    #[test]
    fn tls_urls_for_the_broker_and_postgresql_are_accepted() {
        assert!(ensure_amqp_url("amqps://user:pw@rabbit.example.com:5671/%2f").is_ok());
        for url in [
            "postgres://user:pw@db.example.com/users?sslmode=require",
            "postgresql://user@db.example.com/users?sslmode=verify-full&sslrootcert=/ca.pem",
        ] {
            assert!(ensure_database_url("DATABASE_URL", url).is_ok(), "{url}");
        }
        let error = ensure_amqp_url("http://user:pw@rabbit")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("AMQP_URL") && !error.contains("pw"),
            "{error}"
        );
    }

    #[test]
    fn public_base_url_needs_https_unless_loopback() {
        for ok in [
            "https://signup.example.com",
            "https://example.com/base/",
            "http://127.0.0.1:8080",
            "http://127.8.9.10",
            "http://[::1]:8080",
            "http://LOCALHOST:8080",
        ] {
            assert!(ensure_public_base_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://signup.example.com",
            "http://10.0.0.1:8080",
            "http://localhost.example.com",
            "ftp://example.com",
            "example.com",
            "https://example.com/?a=b",
        ] {
            let error = ensure_public_base_url(bad).unwrap_err().to_string();
            assert!(
                error.contains("PUBLIC_BASE_URL") && error.contains(bad),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn defaults_apply_without_environment() {
        let loaded: Example = load_from(crate::testing::env_vars(&[])).unwrap();
        assert_eq!(loaded, Example::default());
    }

    #[test]
    fn environment_overrides_defaults() {
        let loaded: Example = load_from(crate::testing::env_vars(&[
            ("HTTP_ADDR", "0.0.0.0:9000"),
            ("BATCH_SIZE", "250"),
            ("POLL_INTERVAL", "2s"),
            ("DELAYS", "1s, 5s,2m"),
            ("LOG_FORMAT", "json"),
            ("UNRELATED", "ignored"),
        ]))
        .unwrap();
        assert_eq!(loaded.http_addr.port(), 9000);
        assert_eq!(loaded.batch_size, 250);
        assert_eq!(loaded.poll_interval, Duration::from_secs(2));
        assert_eq!(
            loaded.delays,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(120)
            ]
        );
        assert_eq!(loaded.log_format, LogFormat::Json);
    }

    #[test]
    fn empty_variables_fall_back_to_defaults() {
        let loaded: Example = load_from(crate::testing::env_vars(&[("BATCH_SIZE", "")])).unwrap();
        assert_eq!(loaded.batch_size, 10);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("HTTP_ADDR", "not-an-address"),
            ("BATCH_SIZE", "many"),
            ("POLL_INTERVAL", "soon"),
            ("LOG_FORMAT", "xml"),
            ("BATCH_SIZE", "0"),
        ] {
            let error =
                load_from::<Example>(crate::testing::env_vars(&[(var, value)])).unwrap_err();
            assert!(
                error.to_string().contains(var),
                "{var}={value} gave {error}"
            );
        }
    }
}
