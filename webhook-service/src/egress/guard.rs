//! The SSRF guard: which addresses an outbound call may reach, and the DNS resolver that
//! enforces it at connect time.
//!
//! Checking a URL when it is saved is not enough: its name may resolve to another address at
//! each call (DNS rebinding). So the client resolves through [`GuardedResolver`], which hands
//! the connector only addresses it has checked; the connector connects to exactly those, so
//! there is no second lookup to race. IP-literal URLs never reach a resolver: the client
//! checks them itself before sending (`Egress::vet_url`).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The refused IPv4 ranges: (network, prefix length, what it is).
const REFUSED_V4: [([u8; 4], u32, &str); 15] = [
    ([0, 0, 0, 0], 8, "\"this network\" (0.0.0.0/8)"),
    ([10, 0, 0, 0], 8, "private (10.0.0.0/8)"),
    ([100, 64, 0, 0], 10, "shared CGNAT (100.64.0.0/10)"),
    ([127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"),
    (
        [169, 254, 0, 0],
        16,
        "link-local, cloud metadata (169.254.0.0/16)",
    ),
    ([172, 16, 0, 0], 12, "private (172.16.0.0/12)"),
    (
        [192, 0, 0, 0],
        24,
        "IETF protocol assignments (192.0.0.0/24)",
    ),
    ([192, 0, 2, 0], 24, "documentation (192.0.2.0/24)"),
    ([192, 88, 99, 0], 24, "6to4 relay anycast (192.88.99.0/24)"),
    ([192, 168, 0, 0], 16, "private (192.168.0.0/16)"),
    ([198, 18, 0, 0], 15, "benchmarking (198.18.0.0/15)"),
    ([198, 51, 100, 0], 24, "documentation (198.51.100.0/24)"),
    ([203, 0, 113, 0], 24, "documentation (203.0.113.0/24)"),
    ([224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"),
    ([240, 0, 0, 0], 4, "reserved or broadcast (240.0.0.0/4)"),
];

/// The refused IPv6 ranges that embed no IPv4 address: (network, prefix length, what it is).
const REFUSED_V6: [(u128, u32, &str); 10] = [
    (0, 128, "unspecified (::)"),
    (1, 128, "loopback (::1)"),
    (
        0x0064_ff9b_0001 << 80,
        48,
        "local-use NAT64 (64:ff9b:1::/48)",
    ),
    (0x0100 << 112, 64, "discard-only (100::/64)"),
    (0x2001 << 112, 32, "Teredo (2001::/32)"),
    (0x2001_0db8 << 96, 32, "documentation (2001:db8::/32)"),
    (0xfc00 << 112, 7, "unique local (fc00::/7)"),
    (0xfe80 << 112, 10, "link-local (fe80::/10)"),
    (0xfec0 << 112, 10, "site-local (fec0::/10)"),
    (0xff00 << 112, 8, "multicast (ff00::/8)"),
];

/// A connection the guard refused. Found in the error chain to classify an attempt `blocked`.
#[derive(Debug, thiserror::Error)]
#[error("{target} is refused by the SSRF guard: {reason} (WEBHOOK_ALLOWED_NETS can allow it)")]
pub(super) struct Blocked {
    /// The address, or `name (address)` when it came from DNS.
    target: String,
    reason: String,
}

/// A host name that did not resolve. Found in the error chain to classify an attempt `dns`.
#[derive(Debug, thiserror::Error)]
#[error("{host} does not resolve")]
pub(super) struct DnsFailed {
    host: String,
    #[source]
    source: io::Error,
}

/// The address policy: everything is reachable but the refused ranges, unless an allowed net
/// contains the address.
#[derive(Debug)]
pub(super) struct Guard {
    allowed: Vec<IpNet>,
}

impl Guard {
    pub(super) fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// Whether `ip` may be connected to. An IPv6 form of an IPv4 address (mapped, compatible,
    /// NAT64, 6to4) is judged as that IPv4 address, so `::ffff:127.0.0.1` is loopback.
    pub(super) fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        let embedded = embedded_v4(ip).map(IpAddr::V4);
        let allowed = |ip: IpAddr| self.allowed.iter().any(|net| net.contains(&ip));
        if allowed(ip) || embedded.is_some_and(allowed) {
            return Ok(());
        }
        match refusal(ip) {
            None => Ok(()),
            Some(reason) => Err(Blocked {
                target: ip.to_string(),
                reason,
            }),
        }
    }

    /// Whether the loopback addresses are allowed (local receivers, named `localhost`).
    pub(super) fn allows_loopback(&self) -> bool {
        self.check(IpAddr::V4(Ipv4Addr::LOCALHOST)).is_ok()
            || self.check(IpAddr::V6(Ipv6Addr::LOCALHOST)).is_ok()
    }
}

/// Why `ip` is refused (before the allow-list), if it is.
fn refusal(ip: IpAddr) -> Option<String> {
    if let Some(v4) = embedded_v4(ip) {
        let reason = refusal_v4(v4)?;
        return Some(match ip {
            IpAddr::V4(_) => reason.to_owned(),
            IpAddr::V6(_) => format!("it embeds {v4}, {reason}"),
        });
    }
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    let bits = u128::from(v6);
    REFUSED_V6
        .iter()
        .find(|(net, len, _)| prefix_matches_v6(bits, *net, *len))
        .map(|(_, _, reason)| (*reason).to_owned())
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    REFUSED_V4
        .iter()
        .find(|(net, len, _)| {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            bits & mask == u32::from_be_bytes(*net) & mask
        })
        .map(|(_, _, reason)| *reason)
}

fn prefix_matches_v6(bits: u128, net: u128, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    bits & mask == net & mask
}

/// The IPv4 address an address stands for: itself, or the one an IPv6 form carries
/// (`::ffff:a.b.c.d` mapped, `::ffff:0:a.b.c.d` translated, `::a.b.c.d` compatible,
/// `64:ff9b::a.b.c.d` NAT64, `2002:aabb:ccdd::/48` 6to4).
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let v6 = match ip {
        IpAddr::V4(v4) => return Some(v4),
        IpAddr::V6(v6) => v6,
    };
    let bits = u128::from(v6);
    // `::` and `::1` are in the compatible range but have their own names.
    if bits <= 1 {
        return None;
    }
    let low32 = || Ipv4Addr::from(bits as u32);
    if prefix_matches_v6(bits, 0xffff << 32, 96)
        || prefix_matches_v6(bits, 0xffff << 48, 96)
        || prefix_matches_v6(bits, 0, 96)
        || prefix_matches_v6(bits, 0x0064_ff9b << 96, 96)
    {
        return Some(low32());
    }
    if prefix_matches_v6(bits, 0x2002 << 112, 16) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// Resolves with the system resolver (`tokio::net::lookup_host`) and refuses the whole name if
/// ANY of its addresses is refused. Dropping the refused ones and connecting to the rest would
/// also be safe, but a name that mixes public and internal addresses is either misconfigured
/// or an attack; failing loudly says so in the attempt record.
#[derive(Debug, Clone)]
pub(super) struct GuardedResolver {
    guard: Arc<Guard>,
}

impl GuardedResolver {
    pub(super) fn new(guard: Arc<Guard>) -> Self {
        Self { guard }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the connector puts the URL's port in.
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|source| DnsFailed {
                    host: host.clone(),
                    source,
                })?
                .collect();
            if addrs.is_empty() {
                return Err(DnsFailed {
                    host,
                    source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
                }
                .into());
            }
            for addr in &addrs {
                guard.check(addr.ip()).map_err(|blocked| Blocked {
                    target: format!("{host} ({})", blocked.target),
                    reason: blocked.reason,
                })?;
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    fn guard(allowed: &[&str]) -> Guard {
        Guard::new(
            allowed
                .iter()
                .map(|net| net.parse().expect("a network"))
                .collect(),
        )
    }

    #[test]
    fn internal_addresses_are_refused() {
        let guard = guard(&[]);
        for refused in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b:1::1",
            // IPv6 forms of refused IPv4 addresses.
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:0:10.0.0.1",
            "::127.0.0.1",
            "::169.254.169.254",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:c0a8:101::",
        ] {
            let error = guard.check(ip(refused)).expect_err(refused);
            assert!(error.to_string().contains("refused"), "{error}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let guard = guard(&[]);
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            guard.check(ip(public)).expect(public);
        }
    }

    #[test]
    fn the_allow_list_opens_ranges_including_their_ipv6_forms() {
        let guard = guard(&["127.0.0.0/8", "10.1.0.0/16"]);
        for allowed in ["127.0.0.1", "127.3.2.1", "::ffff:127.0.0.1", "10.1.2.3"] {
            guard.check(ip(allowed)).expect(allowed);
        }
        for refused in ["::1", "10.2.0.1", "169.254.169.254"] {
            guard.check(ip(refused)).expect_err(refused);
        }
        assert!(guard.allows_loopback());
        assert!(!self::guard(&["10.0.0.0/8"]).allows_loopback());
    }

    #[test]
    fn messages_name_the_address_and_the_range() {
        let error = guard(&[])
            .check(ip("::ffff:169.254.169.254"))
            .expect_err("metadata");
        assert_eq!(
            error.to_string(),
            "::ffff:169.254.169.254 is refused by the SSRF guard: it embeds 169.254.169.254, \
             link-local, cloud metadata (169.254.0.0/16) (WEBHOOK_ALLOWED_NETS can allow it)"
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_a_refused_address() {
        let resolver = GuardedResolver::new(Arc::new(guard(&[])));
        let name: Name = "localhost".parse().expect("a name");
        let error = match resolver.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error,
        };
        assert!(error.is::<Blocked>(), "{error}");
        assert!(
            error.to_string().starts_with("localhost (127.0.0.1)"),
            "{error}"
        );

        let resolver = GuardedResolver::new(Arc::new(guard(&["127.0.0.0/8", "::1/128"])));
        let name: Name = "localhost".parse().expect("a name");
        let addrs: Vec<SocketAddr> = resolver.resolve(name).await.expect("allowed").collect();
        assert!(
            addrs.iter().all(|addr| addr.ip().is_loopback()),
            "{addrs:?}"
        );
    }
}
