//! Custom request headers given by users (an endpoint's `headers`, a job's `request.headers`
//! and `notify.headers`): which names are refused, the bounds, and the redaction of values
//! that look like credentials in every answer.

use axum::http::{HeaderName, HeaderValue};

use super::error::FieldErrors;

/// Most custom headers of one request.
pub(crate) const MAX_HEADERS: usize = 32;
/// Longest header value.
const MAX_VALUE_BYTES: usize = 4096;
/// Names and values of all custom headers of one request together.
const MAX_TOTAL_BYTES: usize = 16 * 1024;

/// Where the headers go, which decides the names refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderUse {
    /// A signed webhook: the service sets `content-type` and the `webhook-*` signature headers.
    Webhook,
    /// A job's request: the caller may set its body's `content-type` (and any `webhook-*`
    /// header, e.g. to forward a signature it made itself).
    JobRequest,
    /// A job's signed outcome report: like [`HeaderUse::Webhook`].
    Notify,
}

/// Names no caller may set: hop-by-hop headers (RFC 9110 §7.6.1), and those the HTTP client
/// derives from the request itself.
const ALWAYS_REFUSED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Checks and normalises (lower-cased names) `pairs`, recording each problem under
/// `field.<name>` (or `field` for the list as a whole).
pub(crate) fn custom_headers(
    pairs: Vec<(String, String)>,
    usage: HeaderUse,
    field: &str,
    errors: &mut FieldErrors,
) -> Vec<(String, String)> {
    if pairs.len() > MAX_HEADERS {
        errors.add(field, "too_many", format!("at most {MAX_HEADERS} headers"));
    }
    let total: usize = pairs.iter().map(|(n, v)| n.len() + v.len()).sum();
    if total > MAX_TOTAL_BYTES {
        errors.add(
            field,
            "too_large",
            format!("names and values together must be at most {MAX_TOTAL_BYTES} bytes"),
        );
    }
    let mut checked = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        let Ok(parsed) = HeaderName::from_bytes(name.as_bytes()) else {
            errors.add(
                format!("{field}.{name}"),
                "invalid_name",
                "is not a valid header name",
            );
            continue;
        };
        let name = parsed.as_str().to_owned();
        let key = format!("{field}.{name}");
        if let Some(reason) = refusal(&name, usage) {
            errors.add(key, "refused_name", reason);
            continue;
        }
        if value.len() > MAX_VALUE_BYTES {
            errors.add(
                key,
                "too_long",
                format!("must be at most {MAX_VALUE_BYTES} bytes"),
            );
            continue;
        }
        if HeaderValue::from_str(&value).is_err() {
            errors.add(
                key,
                "invalid_value",
                "must be visible ASCII text (no control characters)",
            );
            continue;
        }
        checked.push((name, value));
    }
    checked
}

/// Why `name` (lower case) may not be set, if it may not.
fn refusal(name: &str, usage: HeaderUse) -> Option<&'static str> {
    if ALWAYS_REFUSED.contains(&name) {
        return Some("is set by the HTTP client (hop-by-hop or derived from the request)");
    }
    let signed = matches!(usage, HeaderUse::Webhook | HeaderUse::Notify);
    if signed && name == "content-type" {
        return Some("is set by the service (the body is JSON)");
    }
    if signed && name.starts_with("webhook-") {
        return Some("webhook-* headers carry the service's signature");
    }
    None
}

/// Whether a header's value is shown as `***` in answers: credentials and anything named like
/// one.
pub(crate) fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-api-key"
    ) || [
        "token",
        "secret",
        "key",
        "auth",
        "password",
        "signature",
        "session",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// `pairs` with sensitive values replaced by `***`.
pub(crate) fn redacted(pairs: &[(String, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| {
            let value = if is_sensitive(name) {
                "***".to_owned()
            } else {
                value.clone()
            };
            (name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)], usage: HeaderUse) -> (Vec<(String, String)>, FieldErrors) {
        let mut errors = FieldErrors::default();
        let pairs = pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        (custom_headers(pairs, usage, "headers", &mut errors), errors)
    }

    #[test]
    fn names_are_lower_cased_and_refused_names_are_named() {
        let (ok, errors) = check(&[("X-Tenant", "a")], HeaderUse::Webhook);
        assert_eq!(ok, vec![("x-tenant".to_owned(), "a".to_owned())]);
        assert!(errors.is_empty());
        for refused in ["Host", "Connection", "Transfer-Encoding", "Content-Length"] {
            let (_, errors) = check(&[(refused, "x")], HeaderUse::JobRequest);
            let details = errors.to_value();
            let key = format!("headers.{}", refused.to_ascii_lowercase());
            assert_eq!(details[&key][0]["code"], "refused_name", "{details}");
        }
        for refused in ["content-type", "webhook-signature"] {
            assert!(!check(&[(refused, "x")], HeaderUse::Webhook).1.is_empty());
            assert!(!check(&[(refused, "x")], HeaderUse::Notify).1.is_empty());
            assert!(check(&[(refused, "x")], HeaderUse::JobRequest).1.is_empty());
        }
    }

    #[test]
    fn bad_names_values_and_sizes_are_refused() {
        assert!(!check(&[("bad name", "x")], HeaderUse::Webhook).1.is_empty());
        assert!(
            !check(&[("x-a", "line\r\nbreak")], HeaderUse::Webhook)
                .1
                .is_empty()
        );
        let long = "v".repeat(MAX_VALUE_BYTES + 1);
        assert!(!check(&[("x-a", &long)], HeaderUse::Webhook).1.is_empty());
        let names: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("x-{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        let errors = check(&many, HeaderUse::Webhook).1.to_value();
        assert_eq!(errors["headers"][0]["code"], "too_many");
    }

    #[test]
    fn credentials_are_redacted() {
        for name in [
            "Authorization",
            "cookie",
            "X-Api-Key",
            "x-auth-user",
            "x-access-token",
            "client-secret",
        ] {
            assert!(is_sensitive(name), "{name}");
        }
        assert!(!is_sensitive("x-tenant"));
        let shown = redacted(&[
            ("authorization".into(), "Bearer s3cret".into()),
            ("x-tenant".into(), "acme".into()),
        ]);
        assert_eq!(shown[0].1, "***");
        assert_eq!(shown[1].1, "acme");
    }
}
