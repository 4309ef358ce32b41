//! The SMS settings' types (`SMS_GATEWAY`, `SMS_HTTP_BODY_ENCODING`, `SMS_HTTP_HEADERS`, the
//! auth token) and their start-up validation.

use std::time::Duration;

use common::settings::{SettingsError, ensure};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Settings;
use crate::sms::template;

/// `SMS_RETRY_SCHEDULE` default: a code lives minutes, so retries come fast; the deadline (the
/// code's expiry) ends them earlier anyway.
pub(super) const DEFAULT_SMS_RETRY_SCHEDULE: [Duration; 8] = [
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(120),
    Duration::from_secs(300),
    Duration::from_secs(300),
];

/// `SMS_TEMPLATE` default.
pub(super) const DEFAULT_SMS_TEMPLATE: &str =
    "{app}: your code is {code}. It expires in {minutes} minutes.";

/// `SMS_HTTP_BODY` default.
pub(super) const DEFAULT_SMS_HTTP_BODY: &str = r#"{"to":"{to}","text":"{text}"}"#;

/// The placeholders of `SMS_TEMPLATE`.
const TEMPLATE_PLACEHOLDERS: &[&str] = &["app", "code", "minutes"];
/// The placeholders of `SMS_HTTP_BODY`.
const HTTP_BODY_PLACEHOLDERS: &[&str] = &["to", "text"];

/// `SMS_GATEWAY`: where a verification code's SMS goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsGateway {
    /// One file per SMS in `SMS_DIR` (development).
    #[default]
    File,
    /// A Twilio-compatible Messages API.
    Twilio,
    /// Any HTTP API, by a request template (`SMS_HTTP_*`).
    Http,
}

impl SmsGateway {
    /// `file`, `twilio`, `http` (also the `gateway` label of the SMS metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Twilio => "twilio",
            Self::Http => "http",
        }
    }
}

/// `SMS_HTTP_BODY_ENCODING`: how `{to}` and `{text}` are escaped in `SMS_HTTP_BODY`, and the
/// request's default `content-type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsBodyEncoding {
    /// JSON string escaping (the template supplies the quotes); `application/json`.
    #[default]
    Json,
    /// URL form encoding; `application/x-www-form-urlencoded`.
    Form,
    /// As is; `text/plain; charset=utf-8`.
    Raw,
}

/// A secret setting (`SMS_TWILIO_AUTH_TOKEN`). `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SmsSecret(pub String);

impl std::fmt::Debug for SmsSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SmsSecret(***)")
    }
}

/// `SMS_HTTP_HEADERS`: `Name: value` pairs separated by `;`, e.g. `Authorization: Bearer x;
/// X-Account: 42`. A part without a `Name:` continues the previous value, so
/// `Content-Type: text/plain; charset=utf-8` is one header. `Debug` prints the names only
/// (values are often credentials).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SmsHeaders(pub Vec<(String, String)>);

impl std::fmt::Debug for SmsHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}: ***")))
            .finish()
    }
}

/// Headers the HTTP client sets itself.
const CLIENT_OWNED: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

impl SmsHeaders {
    /// Parses the `;`-separated form.
    ///
    /// # Errors
    /// A message quoting the part that is not a header (never a value: it may be a secret).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut headers: Vec<(String, String)> = Vec::new();
        for part in text.split(';') {
            let header = part.split_once(':').and_then(|(name, value)| {
                let name = name.trim();
                http::HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(|_| (name.to_owned(), value.trim().to_owned()))
            });
            match (header, headers.last_mut()) {
                (Some(header), _) => headers.push(header),
                (None, Some((_, value))) => {
                    value.push(';');
                    value.push_str(part.trim_end());
                }
                (None, None) if part.trim().is_empty() => {}
                (None, None) => {
                    return Err("the first part is not `Name: value`".to_owned());
                }
            }
        }
        for (name, value) in &headers {
            if CLIENT_OWNED.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                return Err(format!("the {name} header is set by the HTTP client"));
            }
            if http::HeaderValue::from_str(value).is_err() {
                return Err(format!("the value of {name} is not a valid header value"));
            }
        }
        Ok(Self(headers))
    }
}

impl Serialize for SmsHeaders {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        s.serialize_str(&text.join("; "))
    }
}

impl<'de> Deserialize<'de> for SmsHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The SMS part of [`Settings::validate`]: the template always, each gateway's own settings
/// when it is the one chosen.
pub(super) fn validate(settings: &Settings) -> Result<(), SettingsError> {
    template::check(&settings.sms_template, TEMPLATE_PLACEHOLDERS, &["code"])
        .map_err(|error| SettingsError::invalid(format!("SMS_TEMPLATE: {error}")))?;
    ensure(settings.sms_retry_schedule.len() <= 50, || {
        "SMS_RETRY_SCHEDULE has more than 50 delays".into()
    })?;
    match settings.sms_gateway {
        SmsGateway::File => ensure(!settings.sms_dir.as_os_str().is_empty(), || {
            "SMS_DIR must not be empty with SMS_GATEWAY=file".into()
        }),
        SmsGateway::Twilio => validate_twilio(settings),
        SmsGateway::Http => validate_http(settings),
    }
}

fn validate_twilio(settings: &Settings) -> Result<(), SettingsError> {
    let sid = settings
        .sms_twilio_account_sid
        .as_deref()
        .unwrap_or_default();
    ensure(!sid.is_empty(), || {
        "SMS_GATEWAY=twilio needs SMS_TWILIO_ACCOUNT_SID".into()
    })?;
    // It goes into the URL path.
    ensure(sid.bytes().all(|b| b.is_ascii_alphanumeric()), || {
        format!("SMS_TWILIO_ACCOUNT_SID {sid:?} is not an account SID (letters and digits)")
    })?;
    ensure(
        settings
            .sms_twilio_auth_token
            .as_ref()
            .is_some_and(|token| !token.0.is_empty()),
        || "SMS_GATEWAY=twilio needs SMS_TWILIO_AUTH_TOKEN".into(),
    )?;
    ensure(
        settings.sms_from.is_some() || settings.sms_twilio_messaging_service_sid.is_some(),
        || "SMS_GATEWAY=twilio needs SMS_FROM or SMS_TWILIO_MESSAGING_SERVICE_SID".into(),
    )?;
    ensure_http_url("SMS_TWILIO_BASE_URL", &settings.sms_twilio_base_url)
}

fn validate_http(settings: &Settings) -> Result<(), SettingsError> {
    let Some(url) = &settings.sms_http_url else {
        return Err(SettingsError::invalid(
            "SMS_GATEWAY=http needs SMS_HTTP_URL",
        ));
    };
    ensure_http_url("SMS_HTTP_URL", url)?;
    ensure(
        http::Method::from_bytes(settings.sms_http_method.as_bytes()).is_ok(),
        || {
            format!(
                "SMS_HTTP_METHOD {:?} is not an HTTP method",
                settings.sms_http_method
            )
        },
    )?;
    template::check(
        &settings.sms_http_body,
        HTTP_BODY_PLACEHOLDERS,
        &["to", "text"],
    )
    .map_err(|error| SettingsError::invalid(format!("SMS_HTTP_BODY: {error}")))
}

/// An `http://` or `https://` URL with a host (printed without its secrets).
fn ensure_http_url(variable: &str, url: &str) -> Result<(), SettingsError> {
    let parsed = url::Url::parse(url).ok();
    ensure(
        parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some()),
        || {
            format!(
                "{variable} {} is not an http:// or https:// URL",
                common::settings::redact_url(url)
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        common::settings::load_from(common::testing::env_vars(pairs))
    }

    fn refused(pairs: &[(&str, &str)], expected: &str) {
        let error = load(pairs).expect_err(expected).to_string();
        assert!(
            error.contains(expected),
            "{error:?} should say {expected:?}"
        );
    }

    #[test]
    fn the_defaults_write_files_and_a_gateway_is_parsed_from_the_environment() {
        let settings = load(&[]).expect("defaults");
        assert_eq!(settings.sms_gateway, SmsGateway::File);
        assert_eq!(settings.sms_dir, std::path::PathBuf::from("sms"));
        assert_eq!(
            settings.sms_retry_schedule,
            DEFAULT_SMS_RETRY_SCHEDULE.to_vec()
        );
        let settings = load(&[
            ("SMS_GATEWAY", "http"),
            ("SMS_HTTP_URL", "https://sms.example.com/send?key=k3y-4711"),
            ("SMS_HTTP_METHOD", "PUT"),
            (
                "SMS_HTTP_HEADERS",
                "Authorization: Bearer b34rer-4712; X-Account: 7",
            ),
            ("SMS_HTTP_BODY", "number={to}&message={text}"),
            ("SMS_HTTP_BODY_ENCODING", "form"),
            ("SMS_RETRY_SCHEDULE", "1s,2s"),
        ])
        .expect("an http gateway");
        assert_eq!(settings.sms_gateway, SmsGateway::Http);
        assert_eq!(settings.sms_http_body_encoding, SmsBodyEncoding::Form);
        assert_eq!(settings.sms_http_headers.0.len(), 2);
        assert_eq!(
            settings.sms_retry_schedule,
            vec![Duration::from_secs(1), Duration::from_secs(2)]
        );
        let settings = load(&[
            ("SMS_GATEWAY", "twilio"),
            ("SMS_TWILIO_ACCOUNT_SID", "AC0123456789abcdef"),
            ("SMS_TWILIO_AUTH_TOKEN", "auth-t0ken-4713"),
            ("SMS_TWILIO_MESSAGING_SERVICE_SID", "MG42"),
        ])
        .expect("twilio with a messaging service");
        let printed = format!("{settings:?}");
        assert!(!printed.contains("auth-t0ken-4713"), "{printed}");
    }

    #[test]
    fn secrets_of_the_http_gateway_are_not_printed() {
        let settings = load(&[
            ("SMS_GATEWAY", "http"),
            (
                "SMS_HTTP_URL",
                "https://sms.example.com/send?api_key=k3y-4711",
            ),
            ("SMS_HTTP_HEADERS", "Authorization: Bearer b34rer-4712"),
        ])
        .expect("an http gateway");
        let printed = format!("{settings:?}");
        for secret in ["k3y-4711", "b34rer-4712"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }

    #[test]
    fn bad_sms_settings_are_named() {
        refused(&[("SMS_GATEWAY", "pigeon")], "SMS_GATEWAY");
        refused(&[("SMS_GATEWAY", "twilio")], "needs SMS_TWILIO_ACCOUNT_SID");
        let sid = ("SMS_TWILIO_ACCOUNT_SID", "AC1");
        let token = ("SMS_TWILIO_AUTH_TOKEN", "t");
        refused(
            &[("SMS_GATEWAY", "twilio"), sid],
            "needs SMS_TWILIO_AUTH_TOKEN",
        );
        refused(
            &[("SMS_GATEWAY", "twilio"), sid, token],
            "needs SMS_FROM or SMS_TWILIO_MESSAGING_SERVICE_SID",
        );
        refused(
            &[
                ("SMS_GATEWAY", "twilio"),
                ("SMS_TWILIO_ACCOUNT_SID", "AC/../x"),
                token,
            ],
            "SMS_TWILIO_ACCOUNT_SID \"AC/../x\" is not an account SID",
        );
        refused(
            &[
                ("SMS_GATEWAY", "twilio"),
                sid,
                token,
                ("SMS_FROM", "+15005550006"),
                ("SMS_TWILIO_BASE_URL", "ftp://api.twilio.com"),
            ],
            "SMS_TWILIO_BASE_URL ftp://api.twilio.com is not an http:// or https:// URL",
        );
        load(&[
            ("SMS_GATEWAY", "twilio"),
            sid,
            token,
            ("SMS_FROM", "+15005550006"),
        ])
        .expect("twilio with a sender");
        refused(
            &[("SMS_GATEWAY", "http")],
            "SMS_GATEWAY=http needs SMS_HTTP_URL",
        );
        let url = ("SMS_HTTP_URL", "https://sms.example.com/send");
        refused(
            &[
                ("SMS_GATEWAY", "http"),
                ("SMS_HTTP_URL", "sms.example.com/send"),
            ],
            "SMS_HTTP_URL sms.example.com/send is not an http:// or https:// URL",
        );
        refused(
            &[("SMS_GATEWAY", "http"), url, ("SMS_HTTP_METHOD", "PO ST")],
            "SMS_HTTP_METHOD \"PO ST\" is not an HTTP method",
        );
        refused(
            &[
                ("SMS_GATEWAY", "http"),
                url,
                ("SMS_HTTP_BODY", "{\"text\":\"{text}\"}"),
            ],
            "SMS_HTTP_BODY: {to} is missing",
        );
        refused(
            &[
                ("SMS_GATEWAY", "http"),
                url,
                ("SMS_HTTP_BODY", "{to} {text} {code}"),
            ],
            "SMS_HTTP_BODY: unknown placeholder {code}",
        );
        refused(
            &[
                ("SMS_GATEWAY", "http"),
                url,
                ("SMS_HTTP_BODY_ENCODING", "xml"),
            ],
            "SMS_HTTP_BODY_ENCODING",
        );
        refused(&[("SMS_HTTP_HEADERS", "Bearer x")], "SMS_HTTP_HEADERS");
        refused(
            &[("SMS_TEMPLATE", "{app} says hi")],
            "SMS_TEMPLATE: {code} is missing",
        );
        refused(
            &[("SMS_TEMPLATE", "{code} in {minute} minutes")],
            "SMS_TEMPLATE: unknown placeholder {minute}",
        );
        refused(&[("SMS_RETRY_SCHEDULE", "1s,often")], "SMS_RETRY_SCHEDULE");
    }

    #[test]
    fn headers_parse_with_continuations_and_hide_their_values() {
        let headers = SmsHeaders::parse(
            "Authorization: Bearer s3cr3t; X-Foo: y ; Content-Type: text/plain; charset=utf-8",
        )
        .expect("headers");
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        assert_eq!(
            headers.0,
            vec![
                pair("Authorization", "Bearer s3cr3t"),
                pair("X-Foo", "y"),
                pair("Content-Type", "text/plain; charset=utf-8"),
            ]
        );
        let printed = format!("{headers:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("Authorization: ***"), "{printed}");
        assert_eq!(SmsHeaders::parse("").expect("none").0, Vec::new());
        assert!(SmsHeaders::parse("no header here").is_err());
        assert!(SmsHeaders::parse("Host: evil").is_err());
        assert!(SmsHeaders::parse("X-Bad: a\u{7f}b").is_err());
    }
}
