//! Phone verification by SMS code (issue 12): numbers, the anti-abuse policy, codes, sends and
//! checks. The HTTP handlers are `routes::phone` and `routes::register`.
//!
//! - [`Phone`]: a number that parsed as a real number (`phonenumber`), in E.164, with its
//!   region and type. National formats only with `PHONE_DEFAULT_REGION`.
//! - [`Phone::policy_block`]: refused regions (`SMS_ALLOWED_COUNTRIES`) and types
//!   (premium-rate, shared-cost, toll-free, pager, voicemail, UAN, personal, and VoIP with
//!   `PHONE_BLOCK_VOIP`): 422 before anything is sent.
//! - `code`: codes derived from a per-verification nonce under `CODE_HMAC_KEY`.
//! - `sends`: every send request is a `phone_sends` row, sent or blocked ([`SendBlock`]); the
//!   velocity limits (per number, prefix, client address and globally, per hour) count them
//!   under one lock.
//! - `verification`: issuing, re-sending and checking codes (one atomic update per check).
//!
//! Codes, nonces and full numbers are never logged: numbers appear through `mask_phone`.

pub(crate) mod code;
pub(crate) mod sends;
pub(crate) mod verification;

use phonenumber::{Mode, Type, country::Id};

use crate::{error::ApiError, settings::Settings};

/// Longest input read as a phone number (the parser need not see kilobytes).
const MAX_INPUT_CHARS: usize = 40;

/// A real phone number: parsed, valid for its region, without an extension.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Phone {
    e164: String,
    region: Option<Id>,
    kind: Type,
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&common::events::mask_phone(&self.e164))
    }
}

impl Phone {
    /// Parses `raw` (`+44 7400 123456`, or a national format with `PHONE_DEFAULT_REGION`).
    ///
    /// # Errors
    /// [`ApiError::InvalidPhone`] when it is not a valid number.
    pub(crate) fn parse(raw: &str, settings: &Settings) -> Result<Self, ApiError> {
        let raw = raw.trim();
        let region = settings.phone_default_region.id();
        if raw.chars().count() > MAX_INPUT_CHARS || (!raw.starts_with('+') && region.is_none()) {
            return Err(ApiError::InvalidPhone);
        }
        let number = phonenumber::parse(region, raw).map_err(|_| ApiError::InvalidPhone)?;
        if number.extension().is_some() || !number.is_valid() {
            return Err(ApiError::InvalidPhone);
        }
        Ok(Self {
            e164: number.format().mode(Mode::E164).to_string(),
            region: number.country().id(),
            kind: number.number_type(&phonenumber::metadata::DATABASE),
        })
    }

    /// E.164: `+447400123456`.
    pub(crate) fn e164(&self) -> &str {
        &self.e164
    }

    /// `+447400123456` → `+447400123`: the number range abuse comes from.
    pub(crate) fn prefix(&self, strip_digits: u32) -> String {
        let digits = self.e164.len().saturating_sub(1);
        let keep = digits.saturating_sub(strip_digits as usize).max(1);
        self.e164[..=keep].to_owned()
    }

    /// The number as logged.
    pub(crate) fn masked(&self) -> String {
        common::events::mask_phone(&self.e164)
    }

    /// Why no SMS may go to this number at all, if it may not.
    pub(crate) fn policy_block(&self, settings: &Settings) -> Option<SendBlock> {
        if !settings.sms_allowed_countries.allows(self.region) {
            return Some(SendBlock::CountryNotAllowed);
        }
        let allowed = match self.kind {
            Type::Mobile | Type::FixedLineOrMobile | Type::FixedLine => true,
            Type::Voip => !settings.phone_block_voip,
            // Premium-rate, shared-cost and UAN numbers earn their owner money per message
            // (SMS pumping); toll-free, pager, voicemail and personal (forwarding) numbers do
            // not belong to one person's handset; the rest are not subscriber numbers.
            Type::PremiumRate
            | Type::SharedCost
            | Type::TollFree
            | Type::Pager
            | Type::Voicemail
            | Type::Uan
            | Type::PersonalNumber
            | Type::Emergency
            | Type::ShortCode
            | Type::StandardRate
            | Type::Carrier
            | Type::NoInternational
            | Type::Unknown => false,
        };
        (!allowed).then_some(SendBlock::TypeNotAllowed)
    }
}

/// Why a send request sent nothing: the `blocked_reason` of its `phone_sends` row and the
/// `reason` label of `phone_sms_blocked_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendBlock {
    /// `SMS_ALLOWED_COUNTRIES` (422 `phone_country_not_allowed`).
    CountryNotAllowed,
    /// A refused number type (422 `phone_type_not_allowed`).
    TypeNotAllowed,
    /// `PHONE_SENDS_PER_NUMBER_PER_HOUR` (429).
    VelocityNumber,
    /// `PHONE_SENDS_PER_PREFIX_PER_HOUR` (429).
    VelocityPrefix,
    /// `PHONE_SENDS_PER_IP_PER_HOUR` (429).
    VelocityIp,
    /// `PHONE_SENDS_GLOBAL_PER_HOUR` (429).
    VelocityGlobal,
    /// `PHONE_RESEND_COOLDOWN` since the verification's last SMS (202, nothing sent).
    Cooldown,
    /// `PHONE_MAX_SENDS` reached for the verification (202, nothing sent).
    MaxSends,
    /// Resend for a number without a verification (202, nothing sent).
    NoVerification,
    /// Resend for a number whose verification is verified (202, nothing sent).
    AlreadyVerified,
}

impl SendBlock {
    /// Every reason, for the zero-valued metrics at start-up.
    pub(crate) const ALL: [Self; 10] = [
        Self::CountryNotAllowed,
        Self::TypeNotAllowed,
        Self::VelocityNumber,
        Self::VelocityPrefix,
        Self::VelocityIp,
        Self::VelocityGlobal,
        Self::Cooldown,
        Self::MaxSends,
        Self::NoVerification,
        Self::AlreadyVerified,
    ];

    /// The stored and metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::CountryNotAllowed => "country_not_allowed",
            Self::TypeNotAllowed => "type_not_allowed",
            Self::VelocityNumber => "velocity_number",
            Self::VelocityPrefix => "velocity_prefix",
            Self::VelocityIp => "velocity_ip",
            Self::VelocityGlobal => "velocity_global",
            Self::Cooldown => "cooldown",
            Self::MaxSends => "max_sends",
            Self::NoVerification => "no_verification",
            Self::AlreadyVerified => "already_verified",
        }
    }

    /// Whether the velocity limits count a request blocked for this reason. Requests answered
    /// 202 count like sent ones, whether or not the number has a verification, so the limits
    /// trip at the same request for known and unknown numbers (no enumeration); requests
    /// refused with 422 or 429 do not count, so a client that stops recovers after the window.
    pub(crate) fn counts_for_velocity(self) -> bool {
        matches!(
            self,
            Self::Cooldown | Self::MaxSends | Self::NoVerification | Self::AlreadyVerified
        )
    }

    /// The API error of a refused request (`None`: the request is answered 202).
    pub(crate) fn api_error(self, retry_after: u64) -> Option<ApiError> {
        match self {
            Self::CountryNotAllowed => Some(ApiError::PhoneCountryNotAllowed),
            Self::TypeNotAllowed => Some(ApiError::PhoneTypeNotAllowed),
            Self::VelocityNumber
            | Self::VelocityPrefix
            | Self::VelocityIp
            | Self::VelocityGlobal => Some(ApiError::RateLimited {
                retry_after: retry_after.max(1),
            }),
            Self::Cooldown | Self::MaxSends | Self::NoVerification | Self::AlreadyVerified => None,
        }
    }
}

/// Registers the phone metrics with zero values, so dashboards and alerts see them before the
/// first SMS.
pub(crate) fn describe_metrics() {
    use metrics::{Unit, counter, describe_counter};
    describe_counter!(
        "phone_sms_sends_total",
        Unit::Count,
        "SMS codes written to the outbox (first sends and resends)"
    );
    describe_counter!(
        "phone_sms_blocked_total",
        Unit::Count,
        "Send requests that sent nothing, by reason"
    );
    describe_counter!(
        "phone_checks_total",
        Unit::Count,
        "Phone code checks by result"
    );
    describe_counter!(
        "phone_verifications_verified_total",
        Unit::Count,
        "Phone numbers verified (conversion = this / phone_sms_sends_total)"
    );
    counter!("phone_sms_sends_total").absolute(0);
    counter!("phone_verifications_verified_total").absolute(0);
    for reason in SendBlock::ALL {
        counter!("phone_sms_blocked_total", "reason" => reason.label()).absolute(0);
    }
    for result in verification::CHECK_METRIC_RESULTS {
        counter!("phone_checks_total", "result" => *result).absolute(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Phone, ApiError> {
        Phone::parse(raw, &Settings::default())
    }

    fn parse_in(raw: &str, region: &str) -> Result<Phone, ApiError> {
        let settings = Settings {
            phone_default_region: region.parse().unwrap(),
            ..Settings::default()
        };
        Phone::parse(raw, &settings)
    }

    #[test]
    fn numbers_are_e164_and_national_formats_need_a_default_region() {
        let mobile = parse(" +44 7400 123456 ").unwrap();
        assert_eq!(mobile.e164(), "+447400123456");
        assert_eq!(mobile.region, Some(Id::GB));
        assert_eq!(mobile.policy_block(&Settings::default()), None);
        assert_eq!(mobile.prefix(3), "+447400123");
        assert_eq!(format!("{mobile:?}"), "+4474…56");
        assert!(matches!(parse("07400 123456"), Err(ApiError::InvalidPhone)));
        assert_eq!(parse_in("07400 123456", "GB").unwrap(), mobile);
        assert_eq!(
            parse_in("+1 201 555 0123", "GB").unwrap().e164(),
            "+12015550123"
        );
        for bad in [
            "",
            "+",
            "+44",
            "+44 1234",
            "hello",
            "+999 123456789",
            "+447400123456 ext. 5",
        ] {
            assert!(matches!(parse(bad), Err(ApiError::InvalidPhone)), "{bad:?}");
        }
        assert!(matches!(
            parse(&format!("+44{}", "7".repeat(60))),
            Err(ApiError::InvalidPhone)
        ));
    }

    #[test]
    fn premium_rate_voip_and_other_types_are_refused() {
        let settings = Settings::default();
        for (number, kind) in [
            ("+449098790555", Type::PremiumRate),
            ("+445612345678", Type::Voip),
            ("+448001234567", Type::TollFree),
            ("+447012345678", Type::PersonalNumber),
            ("+447624123456", Type::Mobile),
        ] {
            assert_eq!(parse(number).unwrap().kind, kind, "{number}");
        }
        let premium = parse("+449098790555").unwrap();
        assert_eq!(
            premium.policy_block(&settings),
            Some(SendBlock::TypeNotAllowed)
        );
        let voip = parse("+445612345678").unwrap();
        assert_eq!(
            voip.policy_block(&settings),
            Some(SendBlock::TypeNotAllowed)
        );
        let allow_voip = Settings {
            phone_block_voip: false,
            ..Settings::default()
        };
        assert_eq!(voip.policy_block(&allow_voip), None);
        let only_france = Settings {
            sms_allowed_countries: "FR".parse().unwrap(),
            ..Settings::default()
        };
        assert_eq!(
            parse("+447400123456").unwrap().policy_block(&only_france),
            Some(SendBlock::CountryNotAllowed)
        );
        assert_eq!(
            parse("+33612345678").unwrap().policy_block(&only_france),
            None
        );
    }
}
