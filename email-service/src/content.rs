//! What a mail may carry. Whoever can publish to the events exchange could otherwise have us
//! mail their own link from our domain (phishing with our name on it): a verification link must
//! start with `PUBLIC_BASE_URL` + `/` and a code must be exactly six ASCII digits (the contract
//! in `common::events`). A refused event is never mailed: the consumer dead-letters it.

use common::events::{SignupEvent, VerificationDetails};

/// Why an event's content is refused. Permanent. The text never quotes the link or code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RefusedContent {
    /// The link points outside `PUBLIC_BASE_URL`, or holds whitespace or control characters
    /// (which could smuggle text into the plain-text part).
    #[error("verification link outside PUBLIC_BASE_URL (or not a plain URL)")]
    ForeignLink,
    /// The code is not six ASCII digits.
    #[error("verification code is not exactly 6 ASCII digits")]
    MalformedCode,
    /// A first or last name with characters a name does not have (a URL, digits, controls).
    #[error("a name holds characters a name does not have")]
    UnusualName,
}

impl RefusedContent {
    /// Metric label: the refused field.
    pub(crate) fn field(self) -> &'static str {
        match self {
            Self::ForeignLink => "link",
            Self::MalformedCode => "code",
            Self::UnusualName => "name",
        }
    }
}

/// The checks, built once from `PUBLIC_BASE_URL`.
#[derive(Debug, Clone)]
pub(crate) struct ContentPolicy {
    /// `PUBLIC_BASE_URL` without its trailing slashes, plus `/`: the trailing `/` is what stops
    /// `https://example.com.evil.test/…` from passing for `https://example.com`.
    link_prefix: String,
}

impl ContentPolicy {
    pub(crate) fn new(public_base_url: &str) -> Self {
        Self {
            link_prefix: format!("{}/", public_base_url.trim_end_matches('/')),
        }
    }

    /// `Ok` when `event` may be mailed as it is.
    ///
    /// # Errors
    /// [`RefusedContent`] naming the first bad field.
    pub(crate) fn check(&self, event: &SignupEvent) -> Result<(), RefusedContent> {
        let (verification, names) = match event {
            SignupEvent::UserRegistered(e) => (
                Some(&e.data.verification),
                [&e.data.first_name, &e.data.last_name],
            ),
            SignupEvent::VerificationReminder(e) => (
                Some(&e.data.verification),
                [&e.data.first_name, &e.data.last_name],
            ),
            SignupEvent::VerificationResent(e) => (
                Some(&e.data.verification),
                [&e.data.first_name, &e.data.last_name],
            ),
            SignupEvent::UserVerified(e) => (None, [&e.data.first_name, &e.data.last_name]),
            // No link, code or name: nothing to check.
            SignupEvent::SignupAttempted(_) => return Ok(()),
            // Not mails (never routed to this queue; acked unmailed): nothing to check.
            SignupEvent::PhoneVerificationRequested(_) | SignupEvent::PhoneVerified(_) => {
                return Ok(());
            }
        };
        // Names are printed in the greeting: the user-service's rule, again.
        if names.iter().any(|name| {
            name.as_deref()
                .is_some_and(|n| !common::names::is_plain_name(n))
        }) {
            return Err(RefusedContent::UnusualName);
        }
        verification.map_or(Ok(()), |verification| self.check_verification(verification))
    }

    fn check_verification(&self, verification: &VerificationDetails) -> Result<(), RefusedContent> {
        let link = &verification.link;
        if !link.starts_with(&self.link_prefix) || !link.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RefusedContent::ForeignLink);
        }
        let code = &verification.code;
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RefusedContent::MalformedCode);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn check(base: &str, link: &str, code: &str) -> Result<(), RefusedContent> {
        ContentPolicy::new(base).check_verification(&VerificationDetails {
            link: link.into(),
            code: code.into(),
            expires_at: Utc::now(),
            code_expires_at: None,
        })
    }

    #[test]
    fn links_under_the_public_base_url_and_six_digit_codes_pass() {
        let link = "https://example.com/user/verify?token=abc";
        assert_eq!(check("https://example.com", link, "012345"), Ok(()));
        assert_eq!(check("https://example.com/", link, "012345"), Ok(()));
    }

    #[test]
    fn foreign_or_disguised_links_are_refused() {
        for link in [
            "https://evil.test/user/verify?token=abc",
            "https://example.com.evil.test/user/verify",
            "https://example.com@evil.test/",
            "https://example.com",
            "http://example.com/user/verify?token=abc",
            "https://example.com/user/verify?token=abc\n\nOr visit https://evil.test",
            "https://example.com/user/verify?token=a b",
        ] {
            assert_eq!(
                check("https://example.com", link, "012345"),
                Err(RefusedContent::ForeignLink),
                "{link:?}"
            );
        }
    }

    #[test]
    fn codes_of_another_shape_are_refused() {
        let link = "https://example.com/user/verify?token=abc";
        for code in ["12345", "1234567", "12345a", "١٢٣٤٥٦", "12 345", ""] {
            assert_eq!(
                check("https://example.com", link, code),
                Err(RefusedContent::MalformedCode),
                "{code:?}"
            );
        }
    }
}
