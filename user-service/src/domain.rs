//! Values that passed validation: built once from a request, then trusted by the code below the
//! handlers.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use validator::{ValidateEmail, ValidateLength, ValidationError};

use crate::{password::Password, phone::Phone};

/// An email address as accounts know it: trimmed and lower-cased, its domain in ASCII
/// (IDNA: `ann@bücher.example` is `ann@xn--bcher-kva.example`), so `Ann@X.com` and ` ann@x.com`
/// are one account. Every request type carries its email as a `UserEmail`.
///
/// Normalising is the only thing construction does. The syntax rules (`email`, at most 254
/// characters, a domain name rather than an IP address) are `validator` rules on the
/// registration request, so a bad address there is reported per field like the other fields;
/// elsewhere an invalid address just matches no account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(crate) struct UserEmail(String);

impl UserEmail {
    pub(crate) fn new(raw: &str) -> Self {
        let lower = raw.trim().to_lowercase();
        match lower.rsplit_once('@') {
            Some((local, domain)) if !domain.is_ascii() => match idna::domain_to_ascii(domain) {
                Ok(ascii) => Self(format!("{local}@{ascii}")),
                // Left as is: the `email_domain` rule reports it.
                Err(_) => Self(lower),
            },
            _ => Self(lower),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

/// `validator` rule: the domain is an ASCII domain name, not an IP address (`ann@[10.0.0.1]`,
/// `ann@10.0.0.1`): mail to a literal address bypasses the receiving domain's policies, and
/// nobody's real address looks like that.
pub(crate) fn email_domain(email: &UserEmail) -> Result<(), ValidationError> {
    let domain = email.domain();
    let literal = domain.starts_with('[') || domain.parse::<std::net::IpAddr>().is_ok();
    if literal || !domain.is_ascii() {
        return Err(ValidationError::new("invalid_domain")
            .with_message("must have a domain name, not an IP address".into()));
    }
    Ok(())
}

/// `validator` rule for first and last names: letters (any script, with their combining marks),
/// spaces, hyphens, apostrophes and a period after an initial (`J. R.`). No digits, URLs, `@`,
/// control or bidirectional-override characters: names are printed in mails, which must not
/// carry someone else's message.
pub(crate) fn name_characters(name: &str) -> Result<(), ValidationError> {
    let allowed = common::names::is_plain_name(name);
    if allowed {
        Ok(())
    } else {
        Err(ValidationError::new("invalid_characters").with_message(
            "may contain only letters, spaces, hyphens, apostrophes and an initial's period".into(),
        ))
    }
}

impl<'de> Deserialize<'de> for UserEmail {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|raw| Self::new(&raw))
    }
}

/// Lets `#[validate(email(...))]` check the normalised address.
impl ValidateEmail for UserEmail {
    fn as_email_string(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.0))
    }
}

/// Lets `#[validate(length(...))]` count characters, as it does for a `String`.
impl ValidateLength<u64> for UserEmail {
    fn length(&self) -> Option<u64> {
        self.0.length()
    }
}

/// A registration that passed validation; built from the request in `routes::register`.
#[derive(Debug)]
pub(crate) struct NewUser {
    pub(crate) email: UserEmail,
    pub(crate) password: Password,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    /// The phone to verify by SMS, parsed (and allowed) by the handler.
    pub(crate) phone: Option<Phone>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased_when_deserialised() {
        let email: UserEmail = serde_json::from_str("\"  Ann@Example.COM \"").unwrap();
        assert_eq!(email.as_str(), "ann@example.com");
        assert_eq!(email, UserEmail::new("ann@example.com"));
    }

    #[test]
    fn validator_rules_see_the_normalised_address() {
        assert_eq!(
            UserEmail::new("ä@x.com").length(),
            Some(7),
            "characters, not bytes"
        );
        assert!(UserEmail::new(" Ann@Example.com ").validate_email());
        assert!(!UserEmail::new("ann.example.com").validate_email());
    }

    #[test]
    fn domains_are_idna_normalised_and_ip_literals_refused() {
        let idn = UserEmail::new("Ann@Bücher.Example");
        assert_eq!(idn.as_str(), "ann@xn--bcher-kva.example");
        assert!(idn.validate_email());
        assert!(email_domain(&idn).is_ok());
        assert_eq!(UserEmail::new("ann@xn--bcher-kva.example"), idn);
        for literal in ["ann@[10.0.0.1]", "ann@10.0.0.1", "ann@[ipv6:::1]"] {
            assert!(email_domain(&UserEmail::new(literal)).is_err(), "{literal}");
        }
    }

    #[test]
    fn the_name_rule_is_commons_with_its_own_error_code() {
        assert!(name_characters("Jean-Luc").is_ok());
        let error = name_characters("http://spam.example").unwrap_err();
        assert_eq!(error.code, "invalid_characters");
    }
}
