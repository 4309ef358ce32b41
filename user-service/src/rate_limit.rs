//! Per-client rate limits on the public endpoints (register, verify, resend, and their phone
//! counterparts): token buckets
//! per client address and per network (/24 for IPv4, /64 for IPv6, which gets eight times the
//! address's allowance), answered with 429 `rate_limited` and `Retry-After`.
//!
//! The client address is the TCP peer. Behind a reverse proxy every request comes from the
//! proxy: set `TRUST_FORWARDED_FOR=true` and the last `X-Forwarded-For` entry (the one your
//! proxy appended) is used instead. Never set it without such a proxy: a client could then name
//! any address it likes.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::DefaultKeyedStateStore,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{error::ApiError, state::AppState};

/// `N/period` (`30/1m`: 30 requests a minute, in a burst or spread out) or `off`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RateLimit(Option<(NonZeroU32, Duration)>);

impl RateLimit {
    /// No limit.
    pub const OFF: Self = Self(None);

    /// `requests` per `period`.
    pub fn per(requests: u32, period: Duration) -> Self {
        Self(NonZeroU32::new(requests).map(|n| (n, period)))
    }

    fn quota(self, factor: u32) -> Option<Quota> {
        let (requests, period) = self.0?;
        let burst = requests.saturating_mul(NonZeroU32::new(factor)?);
        Quota::with_period(period / burst.get()).map(|quota| quota.allow_burst(burst))
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some((n, period)) => write!(f, "{n}/{}", humantime::format_duration(period)),
        }
    }
}

impl Serialize for RateLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{self:?}"))
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(Self::OFF);
        }
        let bad = || serde::de::Error::custom(format!("{text:?} is not N/period (30/1m) or off"));
        let (n, period) = text.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let period = humantime::parse_duration(period.trim()).map_err(|_| bad())?;
        if n == 0 || period.is_zero() || period / n < Duration::from_nanos(1) {
            return Err(bad());
        }
        Ok(Self::per(n, period))
    }
}

type Buckets = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

/// The buckets of one endpoint.
struct Limiter {
    per_address: Buckets,
    per_network: Buckets,
    checks: AtomicU64,
}

impl Limiter {
    fn new(limit: RateLimit) -> Option<Self> {
        Some(Self {
            per_address: RateLimiter::keyed(limit.quota(1)?),
            per_network: RateLimiter::keyed(limit.quota(8)?),
            checks: AtomicU64::new(0),
        })
    }

    /// `Err(wait)` when `client` (or its network) has no token left.
    fn check(&self, client: IpAddr) -> Result<(), Duration> {
        // Forget idle clients now and then, so the maps stay as small as the active set.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 10_000 == 9_999 {
            self.per_address.retain_recent();
            self.per_network.retain_recent();
        }
        let now = DefaultClock::default().now();
        self.per_address
            .check_key(&client)
            .and_then(|()| self.per_network.check_key(&network(client)))
            .map_err(|not_until| not_until.wait_time_from(now))
    }
}

/// The client's /24 (IPv4) or /64 (IPv6).
fn network(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(v4.to_bits() & 0xFFFF_FF00)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !0xFFFF_FFFF_FFFF_FFFF)),
    }
}

/// The limits of every limited endpoint.
pub(crate) struct RateLimits {
    register: Option<Limiter>,
    verify: Option<Limiter>,
    resend: Option<Limiter>,
    trust_forwarded_for: bool,
}

impl RateLimits {
    pub(crate) fn new(
        register: RateLimit,
        verify: RateLimit,
        resend: RateLimit,
        trust_forwarded_for: bool,
    ) -> Self {
        Self {
            register: Limiter::new(register),
            verify: Limiter::new(verify),
            resend: Limiter::new(resend),
            trust_forwarded_for,
        }
    }

    fn for_route(&self, method: &Method, route: &str) -> Option<&Limiter> {
        match (method.as_str(), route) {
            ("POST", "/user/register") => self.register.as_ref(),
            // HEAD is answered by the GET handler: it does the same lookup.
            ("POST" | "GET" | "HEAD", "/user/verify") => self.verify.as_ref(),
            ("POST", "/user/verification/resend" | "/user/phone/verification/resend") => {
                self.resend.as_ref()
            }
            ("POST", "/user/phone/verify") => self.verify.as_ref(),
            _ => None,
        }
    }

    /// Runs `work` (a hosted page's handler doing what the API route `api_route`, a POST, does)
    /// if that route's limit lets `client` through, else answers [`ApiError::RateLimited`]
    /// without starting it. The page routes are not limited by [`limit`]: the page and the API
    /// share one budget.
    pub(crate) async fn within<T>(
        &self,
        api_route: &'static str,
        client: IpAddr,
        work: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        if let Some(limiter) = self.for_route(&Method::POST, api_route) {
            limiter.check(client).map_err(|wait| {
                metrics::counter!("http_rate_limited_total", "route" => api_route).increment(1);
                tracing::info!(%client, route = api_route, "rate limited (page)");
                ApiError::RateLimited {
                    retry_after: wait.as_secs().max(1),
                }
            })?;
        }
        work.await
    }

    /// The address the limits apply to (see the module docs).
    fn client(&self, request: &Request) -> IpAddr {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        if !self.trust_forwarded_for {
            return peer;
        }
        request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .next_back()
            .and_then(|last| last.trim().parse().ok())
            .unwrap_or(peer)
    }
}

/// The client's address as the rate limits see it (see the module docs), put in the request's
/// extensions by [`limit`] for handlers that log security events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddress(pub(crate) IpAddr);

impl ClientAddress {
    /// The address [`limit`] recorded for `request` (unspecified if it did not run).
    pub(crate) fn of(extensions: &axum::http::Extensions) -> Self {
        extensions
            .get::<Self>()
            .copied()
            .unwrap_or(Self(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }
}

/// The address [`limit`] recorded, as an extractor (never rejects).
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions))
    }
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Middleware: refuses a request over its endpoint's limit before any work is done, and records
/// the [`ClientAddress`] for the handlers.
pub(crate) async fn limit(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let limits = &state.rate_limits;
    let client = limits.client(&request);
    request.extensions_mut().insert(ClientAddress(client));
    if let Some(limiter) = route
        .as_deref()
        .and_then(|route| limits.for_route(request.method(), route))
        && let Err(wait) = limiter.check(client)
    {
        let route = route.unwrap_or_default();
        metrics::counter!("http_rate_limited_total", "route" => route.clone()).increment(1);
        tracing::info!(%client, route, "rate limited");
        return ApiError::RateLimited {
            retry_after: wait.as_secs().max(1),
        }
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RateLimit, serde_json::Error> {
        serde_json::from_value(serde_json::Value::String(text.into()))
    }

    #[test]
    fn limits_parse_and_print_back() {
        assert_eq!(
            parse("30/1m").unwrap(),
            RateLimit::per(30, Duration::from_secs(60))
        );
        assert_eq!(parse("off").unwrap(), RateLimit::OFF);
        assert_eq!(format!("{:?}", parse("5/10s").unwrap()), "5/10s");
        for bad in ["30", "0/1m", "x/1m", "30/soon", "30/0s", ""] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_address_gets_its_burst_then_waits_and_its_network_gets_eight_times_more() {
        let limiter = Limiter::new(RateLimit::per(3, Duration::from_secs(60))).unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(client).is_ok());
        }
        let wait = limiter.check(client).unwrap_err();
        assert!(
            wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Other addresses of the /24 have their own buckets until the network's runs out.
        let mut allowed = 3;
        for host in 1..=100 {
            let neighbour = IpAddr::V4(Ipv4Addr::new(203, 0, 113, host));
            if host != 7 && limiter.check(neighbour).is_ok() {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 24, "the /24 gets 8 × 3");
        assert!(limiter.check("198.51.100.1".parse().unwrap()).is_ok());
        assert_eq!(
            network("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }
}
