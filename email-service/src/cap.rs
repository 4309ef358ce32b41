//! The per-address daily mail cap (`MAX_MAILS_PER_ADDRESS_PER_DAY`): whatever the user-service
//! asks for (registrations, reminders, resends, sign-up attempt notices), one address receives
//! at most that many mails in any 24 hours. Extra mails are not sent: the delivery is acked, the
//! inbox row marked `suppressed`, `email_suppressed_total` counted and an info line logged with
//! the recipient's domain only.
//!
//! The count is the inbox's own record of the address's admitted mails, in flight or sent, in
//! the last 24 hours, decided in the claim's transaction ([`crate::inbox::claim`]) and keyed by
//! a SHA-256 of the normalised address, so the inbox holds no address in clear. The decisions
//! for one address are serialised and in-flight mails count, so the bound is exact: never more
//! than the cap sent in any 24 hours, whatever the number of instances and concurrent
//! deliveries.
//!
//! Exempt: the welcome mail (`UserVerifiedV1`). Its owner proved the address and it goes out
//! once per account, so it neither counts nor is ever kept back.

use std::{fmt, num::NonZeroU32, time::Duration};

use common::events::SignupEvent;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The window the cap counts over.
pub(crate) const WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Mails per address per day: a number, or `0`/`off` for no cap.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MailCap(Option<NonZeroU32>);

impl MailCap {
    /// No cap.
    pub const OFF: Self = Self(None);

    /// At most `mails` per address per day (`0` is [`MailCap::OFF`]).
    pub fn per_day(mails: u32) -> Self {
        Self(NonZeroU32::new(mails))
    }

    /// The cap, `None` when off.
    pub(crate) fn limit(self) -> Option<u32> {
        self.0.map(NonZeroU32::get)
    }
}

impl fmt::Debug for MailCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for MailCap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{self:?}"))
    }
}

impl<'de> Deserialize<'de> for MailCap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A number from a TOML file, text from the environment.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Self::per_day(n)),
            Raw::Text(text) if text.trim().eq_ignore_ascii_case("off") => Ok(Self::OFF),
            Raw::Text(text) => text.trim().parse().map(Self::per_day).map_err(|_| {
                serde::de::Error::custom(format!("{text:?} is not a number of mails (10) or off"))
            }),
        }
    }
}

/// The key the cap counts `event`'s mail under, `None` for an exempt mail.
pub(crate) fn recipient_key(event: &SignupEvent) -> Option<String> {
    if matches!(event, SignupEvent::UserVerified(_)) {
        return None;
    }
    let address = event.recipient()?.trim().to_lowercase();
    Some(hex::encode(Sha256::digest(address.as_bytes())))
}

/// The part of an address after the `@`, for logs that must not show the address.
pub(crate) fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, domain)| domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<MailCap, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn the_cap_reads_numbers_text_and_off() {
        assert_eq!(parse("10").unwrap().limit(), Some(10));
        assert_eq!(parse("\" 7 \"").unwrap().limit(), Some(7));
        assert_eq!(parse("\"OFF\"").unwrap(), MailCap::OFF);
        assert_eq!(parse("0").unwrap(), MailCap::OFF);
        assert_eq!(parse("\"0\"").unwrap(), MailCap::OFF);
        let error = parse("\"ten\"").unwrap_err().to_string();
        assert!(error.contains("\"ten\""), "{error}");
        assert_eq!(format!("{:?}", MailCap::per_day(10)), "10");
    }

    #[test]
    fn logs_get_the_domain_only() {
        assert_eq!(domain_of("ann@example.com"), "example.com");
        assert_eq!(domain_of("nonsense"), "");
    }
}
