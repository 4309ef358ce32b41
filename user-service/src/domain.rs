//! Values that passed validation: built once from a request, then trusted by the code below the
//! handlers.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use validator::{ValidateEmail, ValidateLength};

use crate::password::Password;

/// An email address as accounts know it: trimmed and lower-cased, so `Ann@X.com` and
/// ` ann@x.com` are one account. Every request type carries its email as a `UserEmail`.
///
/// Normalising is the only thing construction does. The syntax rules (`email`, at most 254
/// characters) are `validator` rules on the registration request, so a bad address there is
/// reported per field like the other fields; elsewhere an invalid address just matches no account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(crate) struct UserEmail(String);

impl UserEmail {
    pub(crate) fn new(raw: &str) -> Self {
        Self(raw.trim().to_lowercase())
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
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
}
