//! Standard Webhooks (spec 1.0, standardwebhooks.com) secrets and signatures.
//!
//! A message is signed as `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">` with the
//! raw bytes of the endpoint's secret, and sent with three headers: `webhook-id`,
//! `webhook-timestamp` (Unix seconds) and `webhook-signature` (one `v1,…` per secret,
//! space-separated, so a receiver still verifies during a secret rotation).
//!
//! The module is public: [`verify`] is what a receiver written in Rust needs, and the
//! integration tests check our signatures against the reference Python verifier.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "whsec_";

/// The fewest secret bytes accepted (the spec's lower bound).
pub const MIN_SECRET_BYTES: usize = 24;

/// How far a `webhook-timestamp` may be from the receiver's clock: the spec's (and the
/// reference libraries') five minutes, in both directions.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// A signing secret: at least [`MIN_SECRET_BYTES`] random bytes, written `whsec_<base64>`.
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A `whsec_…` text that is not a usable secret. The message never contains the text itself.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(pub(crate) String);

impl Secret {
    /// A new random secret: 32 bytes from the operating system's CSPRNG (through `rand`'s
    /// thread-local generator, seeded and periodically reseeded from the OS).
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Parses `whsec_<standard base64>` (the prefix is optional; surrounding blanks ignored).
    ///
    /// # Errors
    /// When the text is not standard base64 (with padding) or decodes to fewer than
    /// [`MIN_SECRET_BYTES`] bytes.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let encoded = text.strip_prefix(PREFIX).unwrap_or(text);
        let bytes = STANDARD.decode(encoded).map_err(|_| {
            SecretError("the signing secret is not `whsec_` followed by standard base64".into())
        })?;
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(SecretError(format!(
                "the signing secret has {} bytes; at least {MIN_SECRET_BYTES} are required",
                bytes.len()
            )));
        }
        Ok(Self(bytes))
    }

    /// `whsec_<standard base64>`: what the endpoint owner is shown and what is stored.
    pub fn to_text(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            STANDARD.encode(self.mac(msg_id, timestamp, body).finalize().into_bytes())
        )
    }

    /// The MAC over the signed content, before finalisation (signing and verifying share it).
    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// The three Standard Webhooks headers for one attempt: `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` (one `v1,…` per secret, space-separated: during a rotation both the new
/// and the previous secret sign). Pass the current secret first.
pub fn headers(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let signatures: Vec<String> = secrets
        .iter()
        .map(|secret| secret.sign(msg_id, timestamp, body))
        .collect();
    [
        ("webhook-id", msg_id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signatures.join(" ")),
    ]
}

/// Why a received webhook was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `webhook-id`, `webhook-timestamp` or `webhook-signature` is absent, empty or not text.
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer number of seconds.
    #[error("the webhook-timestamp header is not a Unix time in seconds")]
    BadTimestamp,
    /// `webhook-timestamp` is further from now than the tolerance (a replay, or a skewed clock).
    #[error("the webhook-timestamp is outside the tolerance")]
    OutsideTolerance,
    /// No `v1,…` signature matches any of the secrets.
    #[error("no matching signature")]
    NoMatchingSignature,
}

/// Verifies a received webhook: the three headers are present, the timestamp is within
/// `tolerance` of `now` (Unix seconds; [`DEFAULT_TOLERANCE`] is the usual choice), and one
/// `v1,` signature of `webhook-signature` is the HMAC of the body under one of `secrets`.
///
/// Signatures are compared in constant time and must be whole (a truncated one never matches);
/// other versions (`v1a,…`) are ignored.
///
/// # Errors
/// [`VerifyError`] says which check failed.
pub fn verify(
    secrets: &[&Secret],
    headers: &http::HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .filter(|value| !value.is_empty())
            .ok_or(VerifyError::MissingHeader(name))
    };
    let msg_id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?;
    let signatures = header("webhook-signature")?;

    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(VerifyError::OutsideTolerance);
    }

    let candidates: Vec<Vec<u8>> = signatures
        .split_ascii_whitespace()
        .filter_map(|versioned| versioned.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .collect();
    let matched = secrets.iter().any(|secret| {
        candidates.iter().any(|candidate| {
            // `verify_slice` refuses any length but the full 32 bytes, then compares in
            // constant time.
            secret
                .mac(msg_id, timestamp, body)
                .verify_slice(candidate)
                .is_ok()
        })
    });
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const REFERENCE_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const REFERENCE_TIMESTAMP: i64 = 1_649_367_553;
    const REFERENCE_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const REFERENCE_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn header_map(headers: [(&'static str, String); 3]) -> http::HeaderMap {
        headers
            .into_iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_str(&value).expect("header value"),
                )
            })
            .collect()
    }

    #[test]
    fn the_reference_vector_is_reproduced() {
        // The reference secret is exactly 24 bytes: the lower bound, so `parse` accepts it.
        let secret = Secret::parse(REFERENCE_SECRET).expect("reference secret");
        assert_eq!(secret.0.len(), MIN_SECRET_BYTES);
        assert_eq!(
            secret.sign(REFERENCE_ID, REFERENCE_TIMESTAMP, REFERENCE_BODY),
            REFERENCE_SIGNATURE
        );
    }

    #[test]
    fn secrets_round_trip_through_their_text() {
        let secret = Secret::generate();
        assert_eq!(secret.0.len(), 32);
        let text = secret.to_text();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(Secret::parse(&text).expect("own text"), secret);
        let bare = text.trim_start_matches("whsec_");
        assert_eq!(Secret::parse(bare).expect("without prefix"), secret);
        assert_ne!(Secret::generate(), secret);
    }

    #[test]
    fn unusable_secrets_are_refused_with_a_reason() {
        let error = Secret::parse("whsec_not base64!").expect_err("bad base64");
        assert!(error.to_string().contains("standard base64"), "{error}");
        let short = format!("whsec_{}", STANDARD.encode([7u8; 23]));
        let error = Secret::parse(&short).expect_err("too short");
        assert!(error.to_string().contains("has 23 bytes"), "{error}");
        assert!(
            !error.to_string().contains(&short),
            "the text is not echoed"
        );
        assert!(Secret::parse("whsec_").is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let secret = Secret::parse(REFERENCE_SECRET).expect("reference secret");
        let debug = format!("{secret:?}");
        assert_eq!(debug, "Secret(***)");
    }

    #[test]
    fn headers_carry_one_signature_per_secret_current_first() {
        let current = Secret::generate();
        let previous = Secret::parse(REFERENCE_SECRET).expect("reference secret");
        let [id, timestamp, signature] = headers(
            &[&current, &previous],
            REFERENCE_ID,
            REFERENCE_TIMESTAMP,
            REFERENCE_BODY,
        );
        assert_eq!(id, ("webhook-id", REFERENCE_ID.to_owned()));
        assert_eq!(timestamp, ("webhook-timestamp", "1649367553".to_owned()));
        assert_eq!(signature.0, "webhook-signature");
        let expected = format!(
            "{} {REFERENCE_SIGNATURE}",
            current.sign(REFERENCE_ID, REFERENCE_TIMESTAMP, REFERENCE_BODY)
        );
        assert_eq!(signature.1, expected);
    }

    #[test]
    fn verify_accepts_either_secret_of_a_rotation() {
        let current = Secret::generate();
        let previous = Secret::generate();
        let now = REFERENCE_TIMESTAMP;
        let map = header_map(headers(&[&current, &previous], "msg_1", now, b"{}"));
        for secret in [&current, &previous] {
            verify(&[secret], &map, b"{}", now + 10, DEFAULT_TOLERANCE).expect("verifies");
        }
        let other = Secret::generate();
        assert_eq!(
            verify(&[&other], &map, b"{}", now, DEFAULT_TOLERANCE),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn verify_refuses_tampering_truncation_and_stale_timestamps() {
        let secret = Secret::parse(REFERENCE_SECRET).expect("reference secret");
        let now = REFERENCE_TIMESTAMP;
        let good = headers(&[&secret], REFERENCE_ID, now, REFERENCE_BODY);
        let map = header_map(good.clone());
        verify(&[&secret], &map, REFERENCE_BODY, now, DEFAULT_TOLERANCE).expect("verifies");

        assert_eq!(
            verify(&[&secret], &map, b"{}", now, DEFAULT_TOLERANCE),
            Err(VerifyError::NoMatchingSignature),
            "another body"
        );
        for truncated in [
            &REFERENCE_SIGNATURE[..REFERENCE_SIGNATURE.len() - 1],
            // Valid base64 of the first 30 bytes of the right MAC.
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3",
            "v1,",
            "v1a,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ] {
            let mut map = map.clone();
            map.insert(
                "webhook-signature",
                http::HeaderValue::from_static(truncated),
            );
            assert_eq!(
                verify(&[&secret], &map, REFERENCE_BODY, now, DEFAULT_TOLERANCE),
                Err(VerifyError::NoMatchingSignature),
                "{truncated}"
            );
        }
        for skew in [-301, 301] {
            assert_eq!(
                verify(
                    &[&secret],
                    &map,
                    REFERENCE_BODY,
                    now + skew,
                    DEFAULT_TOLERANCE
                ),
                Err(VerifyError::OutsideTolerance),
                "{skew}"
            );
        }
        let mut missing = map.clone();
        missing.remove("webhook-id");
        assert_eq!(
            verify(&[&secret], &missing, REFERENCE_BODY, now, DEFAULT_TOLERANCE),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        let mut bad = map;
        bad.insert("webhook-timestamp", http::HeaderValue::from_static("soon"));
        assert_eq!(
            verify(&[&secret], &bad, REFERENCE_BODY, now, DEFAULT_TOLERANCE),
            Err(VerifyError::BadTimestamp)
        );
    }
}
