//! The outbound HTTP client every call of the service goes through, guarded against SSRF.
//!
//! - Addresses: loopback, private, link-local (cloud metadata), CGNAT, multicast, reserved and
//!   the IPv6 forms of those are refused unless `WEBHOOK_ALLOWED_NETS` contains them
//!   ([`guard`]). Names are checked after resolution, at every connect (DNS rebinding); IP
//!   literals, which reqwest never resolves, are checked before sending.
//! - Redirects are never followed (a 3xx is the attempt's answer), environment proxies are
//!   ignored, only `http` and `https` are spoken.
//! - One deadline, the request's `timeout`, bounds connect, send, the response head and the
//!   body read; the connect alone is bounded by `WEBHOOK_CONNECT_TIMEOUT`. At most
//!   [`MAX_RESPONSE_BODY`] bytes of a body are read, then the connection is dropped.
//! - [`Egress::send`] never fails: every outcome is an [`AttemptResult`], with an
//!   [`ErrorKind`] when no answer came.

mod exchange;
mod guard;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::{Host, Url};

use self::{
    exchange::exchange,
    guard::{Guard, GuardedResolver},
};
use crate::settings::Settings;

/// The largest part of a response body kept (and read).
pub(crate) const MAX_RESPONSE_BODY: usize = 20 * 1024;

/// Request headers a caller may not set: the client frames the message itself, and `host`
/// must match the URL the guard checked.
const CLIENT_OWNED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

const USER_AGENT: &str = concat!("signup-outbox-webhooks/", env!("CARGO_PKG_VERSION"));

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

/// An attempt that ended without an answer.
type Failure = (ErrorKind, String);

/// The guarded client: one connection pool shared by every delivery.
#[derive(Debug)]
pub(crate) struct Egress {
    client: reqwest::Client,
    guard: Arc<Guard>,
}

impl Egress {
    /// Builds the client from `WEBHOOK_ALLOWED_NETS`, `WEBHOOK_CONNECT_TIMEOUT`.
    ///
    /// # Errors
    /// When the TLS configuration cannot be built.
    pub(crate) fn new(settings: &Settings) -> anyhow::Result<Self> {
        let guard = Arc::new(Guard::new(settings.webhook_allowed_nets.clone()));
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS versions for the egress client")?
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .dns_resolver(GuardedResolver::new(Arc::clone(&guard)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(settings.webhook_connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(settings.webhook_endpoint_concurrency)
            .user_agent(USER_AGENT)
            .build()
            .context("building the egress HTTP client")?;
        Ok(Self { client, guard })
    }

    /// The checks possible when a URL is saved: http/https, a host, no IP literal in a refused
    /// range (unless allowed), no `localhost` name unless loopback is allowed. Resolved
    /// addresses are checked again at every connect. Userinfo is accepted (sent as basic auth,
    /// redacted by [`redact_url`]).
    pub(crate) fn check_url(&self, url: &str) -> Result<Url, UrlRefused> {
        let url = self
            .vet_url(url)
            .map_err(|(_, message)| UrlRefused(message))?;
        if let Some(Host::Domain(name)) = url.host() {
            let name = name.trim_end_matches('.');
            let local = name == "localhost" || name.ends_with(".localhost");
            if local && !self.guard.allows_loopback() {
                return Err(UrlRefused(format!(
                    "{name} is a loopback name, refused by the SSRF guard \
                     (WEBHOOK_ALLOWED_NETS can allow loopback)"
                )));
            }
        }
        Ok(url)
    }

    /// Parses the URL and checks what can be checked without DNS.
    fn vet_url(&self, url: &str) -> Result<Url, Failure> {
        let invalid = |message: String| (ErrorKind::InvalidRequest, message);
        let url = Url::parse(url).map_err(|error| invalid(format!("not a URL: {error}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "the scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        let literal = match url.host() {
            None => return Err(invalid("the URL has no host".into())),
            Some(Host::Domain(_)) => None,
            Some(Host::Ipv4(ip)) => Some(ip.into()),
            Some(Host::Ipv6(ip)) => Some(ip.into()),
        };
        if let Some(ip) = literal {
            self.guard
                .check(ip)
                .map_err(|blocked| (ErrorKind::Blocked, blocked.to_string()))?;
        }
        Ok(url)
    }

    /// Makes one attempt. Never follows redirects, never uses a proxy.
    ///
    /// An answer whose body stops arriving (deadline, reset) still counts as that answer:
    /// its status is the receiver's verdict; the body is what arrived.
    #[tracing::instrument(skip_all, fields(method = %request.method, url = %redact_url(&request.url)))]
    pub(crate) async fn send(&self, request: OutboundRequest) -> AttemptResult {
        let started_at = Utc::now();
        let clock = std::time::Instant::now();
        let deadline = tokio::time::Instant::now()
            .checked_add(request.timeout)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(365 * 86_400));
        let outcome = match self.build(request) {
            Ok(built) => exchange(built, deadline).await,
            Err(failure) => Err(failure),
        };
        let duration = clock.elapsed();
        match outcome {
            Ok(answer) => {
                tracing::debug!(status = answer.status, ?duration, "answered");
                AttemptResult {
                    started_at,
                    duration,
                    status: Some(answer.status),
                    error: None,
                    retry_after: answer.retry_after,
                    response_headers: answer.headers,
                    response_body: answer.body,
                }
            }
            Err((kind, message)) => {
                tracing::debug!(error_kind = kind.as_str(), error = %message, ?duration, "failed");
                AttemptResult {
                    started_at,
                    duration,
                    status: None,
                    error: Some((kind, message)),
                    retry_after: None,
                    response_headers: Vec::new(),
                    response_body: String::new(),
                }
            }
        }
    }

    fn build(&self, request: OutboundRequest) -> Result<reqwest::RequestBuilder, Failure> {
        let invalid = |message: String| (ErrorKind::InvalidRequest, message);
        let url = self.vet_url(&request.url)?;
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| invalid(format!("{:?} is not an HTTP method", request.method)))?;
        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("{name:?} is not a header name")))?;
            if CLIENT_OWNED_HEADERS.contains(&name.as_str()) {
                return Err(invalid(format!("the {name} header is set by the client")));
            }
            // The value is not quoted: it may be a credential.
            let value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("the value of the {name} header is not valid")))?;
            headers.append(name, value);
        }
        Ok(self
            .client
            .request(method, url)
            .headers(headers)
            .body(request.body))
    }
}

/// At most `max` bytes of `text`, cut at a character boundary (a stored or reported response
/// body: the lossy UTF-8 of [`MAX_RESPONSE_BODY`] bytes may be longer than that).
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
}

/// The URL with userinfo and every query value replaced by `***`: safe for logs and attempts.
///
/// Query keys stay (they say what was sent); a query item without `=` is replaced whole, as
/// it may itself be a token. The fragment is dropped. Text that is not a URL is not echoed.
pub(crate) fn redact_url(url: &str) -> String {
    let Ok(mut url) = Url::parse(url) else {
        return "(not a URL)".into();
    };
    // Both fail only for URLs that cannot have userinfo (no host), which then have none.
    if !url.username().is_empty() {
        let _ = url.set_username("***");
    }
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if let Some(query) = url.query().filter(|query| !query.is_empty()) {
        let redacted: Vec<String> = query
            .split('&')
            .filter(|item| !item.is_empty())
            .map(|item| match item.split_once('=') {
                Some((key, _)) => format!("{key}=***"),
                None => "***".to_owned(),
            })
            .collect();
        url.set_query(Some(&redacted.join("&")));
    }
    url.set_fragment(None);
    url.into()
}
