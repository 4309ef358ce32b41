//! Standard Webhooks (spec 1.0) secrets and signatures. STUB: interface only.

/// A signing secret: ≥ 24 random bytes, written `whsec_<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A `whsec_…` text that is not a usable secret.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SecretError(pub(crate) String);

impl Secret {
    /// A new random secret (32 bytes from the OS CSPRNG).
    pub(crate) fn generate() -> Self {
        unimplemented!("signing helper")
    }

    /// Parses `whsec_<base64>` (the prefix is optional on input); at least 24 bytes.
    pub(crate) fn parse(text: &str) -> Result<Self, SecretError> {
        let _ = text;
        unimplemented!("signing helper")
    }

    /// `whsec_<base64>`.
    pub(crate) fn to_text(&self) -> String {
        unimplemented!("signing helper")
    }

    /// `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`.
    pub(crate) fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let _ = (msg_id, timestamp, body, &self.0);
        unimplemented!("signing helper")
    }
}

/// The three Standard Webhooks headers for one attempt: `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` (one `v1,…` per secret, space-separated: during a rotation both the new
/// and the previous secret sign).
pub(crate) fn headers(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let _ = (secrets, msg_id, timestamp, body);
    unimplemented!("signing helper")
}
