//! The outbound HTTP client. STUB: interface only.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::settings::Settings;

/// The largest part of a response body kept (and read).
pub(crate) const MAX_RESPONSE_BODY: usize = 20 * 1024;

/// One outbound request.
#[derive(Clone)]
pub(crate) struct OutboundRequest {
    pub(crate) url: String,
    pub(crate) method: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// Bound on the whole attempt (connect, send, response head and the bounded body read).
    pub(crate) timeout: Duration,
}

/// Why no usable answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The attempt's timeout passed.
    Timeout,
    /// TCP connection refused or reset.
    Connect,
    /// The host name does not resolve.
    Dns,
    /// TLS handshake or certificate failure.
    Tls,
    /// The SSRF guard refused the address (or the URL).
    Blocked,
    /// The URL or a header is unusable.
    InvalidRequest,
    /// Anything else (protocol error, body error).
    Other,
}

impl ErrorKind {
    /// `timeout`, `connect`, `dns`, `tls`, `blocked`, `invalid_request`, `other`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::Blocked => "blocked",
            Self::InvalidRequest => "invalid_request",
            Self::Other => "other",
        }
    }
}

/// What one attempt produced.
#[derive(Debug, Clone)]
pub(crate) struct AttemptResult {
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) duration: Duration,
    /// The HTTP status, when an answer came (any status, 3xx included: never followed).
    pub(crate) status: Option<u16>,
    /// Set when no answer came.
    pub(crate) error: Option<(ErrorKind, String)>,
    /// `Retry-After` of the answer, as a delay from now (seconds or HTTP date).
    pub(crate) retry_after: Option<Duration>,
    /// The response headers that matter (`content-type`, `retry-after`, `location`, …).
    pub(crate) response_headers: Vec<(String, String)>,
    /// The response body, at most [`MAX_RESPONSE_BODY`] bytes (lossy UTF-8).
    pub(crate) response_body: String,
}

/// A URL refused when it is saved (scheme, host, an IP literal in a refused range).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UrlRefused(pub(crate) String);

/// The guarded client.
#[derive(Debug)]
pub(crate) struct Egress {}

impl Egress {
    /// Builds the client from `WEBHOOK_ALLOWED_NETS`, `WEBHOOK_CONNECT_TIMEOUT`.
    ///
    /// # Errors
    /// When the TLS configuration cannot be built.
    pub(crate) fn new(settings: &Settings) -> anyhow::Result<Self> {
        let _ = settings;
        Ok(Self {})
    }

    /// The checks possible when a URL is saved: http/https, a host, no IP literal in a refused
    /// range (unless allowed). Resolved addresses are checked again at every connect.
    pub(crate) fn check_url(&self, url: &str) -> Result<url::Url, UrlRefused> {
        let _ = url;
        unimplemented!("egress helper")
    }

    /// Makes one attempt. Never follows redirects, never uses a proxy.
    pub(crate) async fn send(&self, request: OutboundRequest) -> AttemptResult {
        let _ = request;
        unimplemented!("egress helper")
    }
}

/// The URL with userinfo and every query value replaced by `***`: safe for logs and attempts.
pub(crate) fn redact_url(url: &str) -> String {
    let _ = url;
    unimplemented!("egress helper")
}
