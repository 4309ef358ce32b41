//! The phone-verification settings' own types (a region, a list of countries) and their
//! validation; the fields themselves are on [`Settings`](super::Settings), named after their
//! environment variables like every other.

use std::{fmt, str::FromStr, time::Duration};

use common::settings::{SettingsError, ensure};
use phonenumber::country::Id;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Settings;

/// Shortest `PHONE_CODE_LENGTH` accepted: six digits is the floor for a code that can be
/// guessed `PHONE_CODE_MAX_ATTEMPTS` times (NIST SP 800-63B).
pub(crate) const MIN_PHONE_CODE_LENGTH: u32 = 6;
/// Longest: 10 digits keep the derivation's modulo bias below 10^-9 (a u64 reduced mod 10^10).
pub(crate) const MAX_PHONE_CODE_LENGTH: u32 = 10;

fn parse_region(text: &str) -> Result<Id, String> {
    let upper = text.trim().to_ascii_uppercase();
    Id::from_str(&upper).map_err(|_| format!("{text:?} is not an ISO 3166 alpha-2 region code"))
}

/// `PHONE_DEFAULT_REGION`: the ISO 3166 alpha-2 region a number without `+` is read in (`GB`
/// reads `07400 123456` as `+447400123456`); empty: numbers must start with `+`.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct PhoneRegion(Option<Id>);

impl PhoneRegion {
    /// No default region: every number must be international (`+…`).
    pub const NONE: Self = Self(None);

    pub(crate) fn id(self) -> Option<Id> {
        self.0
    }
}

impl FromStr for PhoneRegion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self(None));
        }
        parse_region(text).map(|id| Self(Some(id)))
    }
}

impl fmt::Debug for PhoneRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref().map_or("", Id::as_ref))
    }
}

impl Serialize for PhoneRegion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{self:?}"))
    }
}

impl<'de> Deserialize<'de> for PhoneRegion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `SMS_ALLOWED_COUNTRIES`: ISO 3166 alpha-2 regions SMS may be sent to, comma-separated
/// (`GB,IE,FR`); empty: every region.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CountryList(Vec<Id>);

impl CountryList {
    /// Whether a number of `region` may get an SMS (`None`: a non-geographic number, allowed
    /// only when every region is).
    pub(crate) fn allows(&self, region: Option<Id>) -> bool {
        self.0.is_empty() || region.is_some_and(|region| self.0.contains(&region))
    }
}

impl FromStr for CountryList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .filter(|item| !item.trim().is_empty())
            .map(parse_region)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl fmt::Debug for CountryList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(Id::as_ref).collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for CountryList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{self:?}"))
    }
}

impl<'de> Deserialize<'de> for CountryList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The phone settings' rules, each failure naming its variable and value.
pub(super) fn validate(settings: &Settings) -> Result<(), SettingsError> {
    let length = settings.phone_code_length;
    ensure(
        (MIN_PHONE_CODE_LENGTH..=MAX_PHONE_CODE_LENGTH).contains(&length),
        || {
            format!(
                "PHONE_CODE_LENGTH must be {MIN_PHONE_CODE_LENGTH} to {MAX_PHONE_CODE_LENGTH} \
                 digits, got {length}"
            )
        },
    )?;
    for (name, value, max) in [
        (
            "PHONE_CODE_TTL",
            settings.phone_code_ttl,
            Duration::from_secs(24 * 3600),
        ),
        (
            "PHONE_RESEND_COOLDOWN",
            settings.phone_resend_cooldown,
            Duration::from_secs(24 * 3600),
        ),
        (
            "PHONE_FAILED_CHECKS_WINDOW",
            settings.phone_failed_checks_window,
            Duration::from_secs(365 * 24 * 3600),
        ),
    ] {
        ensure(!value.is_zero() && value <= max, || {
            format!(
                "{name} must be positive and at most {}, got {}",
                humantime::format_duration(max),
                humantime::format_duration(value)
            )
        })?;
    }
    for (name, value) in [
        ("PHONE_CODE_MAX_ATTEMPTS", settings.phone_code_max_attempts),
        ("PHONE_MAX_SENDS", settings.phone_max_sends),
        (
            "PHONE_SENDS_PER_NUMBER_PER_HOUR",
            settings.phone_sends_per_number_per_hour,
        ),
        (
            "PHONE_SENDS_PER_PREFIX_PER_HOUR",
            settings.phone_sends_per_prefix_per_hour,
        ),
        (
            "PHONE_SENDS_PER_IP_PER_HOUR",
            settings.phone_sends_per_ip_per_hour,
        ),
        (
            "PHONE_SENDS_GLOBAL_PER_HOUR",
            settings.phone_sends_global_per_hour,
        ),
        ("PHONE_MAX_FAILED_CHECKS", settings.phone_max_failed_checks),
    ] {
        ensure((1..=1_000_000_000).contains(&value), || {
            format!("{name} must be between 1 and 1000000000, got {value}")
        })?;
    }
    let strip = settings.phone_prefix_strip_digits;
    ensure((1..=8).contains(&strip), || {
        format!("PHONE_PREFIX_STRIP_DIGITS must be 1 to 8, got {strip}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        common::settings::load_from(common::testing::env_vars(pairs))
    }

    #[test]
    fn phone_settings_have_their_defaults() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.phone_default_region, PhoneRegion::NONE);
        assert_eq!(settings.sms_allowed_countries, CountryList::default());
        assert_eq!(settings.phone_code_length, 6);
        assert_eq!(settings.phone_code_ttl, Duration::from_secs(600));
        assert_eq!(settings.phone_code_max_attempts, 3);
        assert_eq!(settings.phone_max_sends, 5);
        assert_eq!(settings.phone_resend_cooldown, Duration::from_secs(30));
        assert!(settings.phone_block_voip);
        assert_eq!(settings.phone_sends_per_number_per_hour, 5);
        assert_eq!(settings.phone_prefix_strip_digits, 3);
        assert_eq!(settings.phone_sends_per_prefix_per_hour, 20);
        assert_eq!(settings.phone_sends_per_ip_per_hour, 10);
        assert_eq!(settings.phone_sends_global_per_hour, 1000);
        assert_eq!(settings.phone_max_failed_checks, 100);
        assert_eq!(
            settings.phone_failed_checks_window,
            Duration::from_secs(30 * 24 * 3600)
        );
    }

    #[test]
    fn regions_and_countries_parse_and_print_back() {
        let settings = load(&[
            ("PHONE_DEFAULT_REGION", "gb"),
            ("SMS_ALLOWED_COUNTRIES", "GB, ie,FR"),
        ])
        .unwrap();
        assert_eq!(format!("{:?}", settings.phone_default_region), "GB");
        assert_eq!(format!("{:?}", settings.sms_allowed_countries), "GB,IE,FR");
        assert!(settings.sms_allowed_countries.allows(Some(Id::IE)));
        assert!(!settings.sms_allowed_countries.allows(Some(Id::US)));
        assert!(!settings.sms_allowed_countries.allows(None));
        assert!(CountryList::default().allows(None));
    }

    #[test]
    fn bad_phone_settings_are_refused_by_name_and_value() {
        for (var, value, expected) in [
            (
                "PHONE_CODE_LENGTH",
                "4",
                "PHONE_CODE_LENGTH must be 6 to 10 digits, got 4",
            ),
            ("PHONE_CODE_LENGTH", "11", "got 11"),
            ("PHONE_CODE_TTL", "0s", "PHONE_CODE_TTL must be positive"),
            (
                "PHONE_CODE_MAX_ATTEMPTS",
                "0",
                "PHONE_CODE_MAX_ATTEMPTS must be",
            ),
            ("PHONE_SENDS_PER_IP_PER_HOUR", "0", "got 0"),
            ("PHONE_PREFIX_STRIP_DIGITS", "12", "got 12"),
            ("PHONE_DEFAULT_REGION", "XX", "\"XX\""),
            ("SMS_ALLOWED_COUNTRIES", "GB,Mars", "\"Mars\""),
            ("PHONE_BLOCK_VOIP", "maybe", "PHONE_BLOCK_VOIP"),
        ] {
            let error = load(&[(var, value)]).unwrap_err().to_string();
            assert!(
                error.contains(var) && error.contains(expected),
                "{var}={value} gave {error}"
            );
        }
    }
}
