//! Mail transports: SMTP (a pool of concurrent connections) and `.eml` files in a folder (the
//! developer default). Both implement [`MailTransport`]; the consumer does not know which one
//! it talks to.
//!
//! Every failure is classified once, here, into what the consumer must do next:
//! [`SendError::Transient`] (connection refused, timeout, SMTP 4xx: retry later) or
//! [`SendError::Permanent`] (SMTP 5xx such as an unknown recipient: dead-letter). Its text is
//! stored and logged, so addresses in it are redacted first ([`redact_addresses`]).

mod breaker;
mod file;
pub(crate) mod smtp;
mod tls;

use std::{path::PathBuf, sync::Arc, time::Duration};

pub(crate) use breaker::{Admission, Breaker};

use lettre::Message;

/// Why a mail was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Retrying later may succeed.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot succeed.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// What an email address in an error text becomes.
pub(crate) const REDACTED_ADDRESS: &str = "[redacted address]";

/// `text` with every address-shaped substring (`local@domain`) replaced by
/// [`REDACTED_ADDRESS`]: SMTP servers quote the recipient in their replies
/// (`550 5.1.1 <ann@example.com>: Recipient address rejected`), and these texts end up in the
/// inbox, in dead-letter headers and in logs.
pub(crate) fn redact_addresses(text: &str) -> String {
    static ADDRESS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        // Anything but whitespace and the characters that delimit an address in a reply.
        match regex::Regex::new(r#"[^\s<>()\[\]{},;:="'`]+@[^\s<>()\[\]{},;:="'`]+"#) {
            Ok(regex) => regex,
            Err(error) => unreachable!("a constant, valid pattern: {error}"),
        }
    });
    ADDRESS.replace_all(text, REDACTED_ADDRESS).into_owned()
}

/// Somewhere mails go.
#[async_trait::async_trait]
pub(crate) trait MailTransport: Send + Sync + std::fmt::Debug {
    /// Hands `message` over; `Ok` means the receiving side took responsibility for it.
    ///
    /// # Errors
    /// [`SendError`], classified as transient or permanent.
    async fn send(&self, message: &Message) -> Result<(), SendError>;

    /// A short description for logs (never with credentials).
    fn describe(&self) -> String;
}

/// Where mails go: SMTP (`SMTP_URL`, with its pool size and timeout), else `.eml` files in
/// `MAIL_DIR`. `Debug` prints the SMTP URL without its password.
pub(crate) enum Destination<'a> {
    /// `SMTP_URL`, `SMTP_POOL_SIZE`, `SMTP_TIMEOUT`.
    Smtp {
        url: &'a str,
        pool_size: usize,
        timeout: Duration,
    },
    /// `MAIL_DIR`.
    Folder(PathBuf),
}

impl std::fmt::Debug for Destination<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp {
                url,
                pool_size,
                timeout,
            } => f
                .debug_struct("Smtp")
                .field("url", &common::settings::redact_url(url))
                .field("pool_size", pool_size)
                .field("timeout", timeout)
                .finish(),
            Self::Folder(dir) => f.debug_tuple("Folder").field(dir).finish(),
        }
    }
}

/// The transport for `destination`.
///
/// # Errors
/// An unusable `SMTP_URL` or `MAIL_DIR`.
pub(crate) async fn transport(
    destination: Destination<'_>,
) -> anyhow::Result<Arc<dyn MailTransport>> {
    Ok(match destination {
        Destination::Smtp {
            url,
            pool_size,
            timeout,
        } => Arc::new(smtp::SmtpMailer::new(
            smtp::Endpoint::parse(url)?,
            pool_size,
            timeout,
        )),
        Destination::Folder(dir) => Arc::new(file::FileMailer::new(dir).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_smtp_replies_are_redacted() {
        assert_eq!(
            redact_addresses(
                "permanent error (550): 5.1.1 <ann.lee+x@mail.example.com>: Recipient address \
                 rejected: User unknown in virtual mailbox table"
            ),
            "permanent error (550): 5.1.1 <[redacted address]>: Recipient address rejected: \
             User unknown in virtual mailbox table"
        );
        assert_eq!(
            redact_addresses("to=bob@example.com, from=\"x@y\" and café@exämple.org"),
            "to=[redacted address], from=\"[redacted address]\" and [redacted address]"
        );
        let plain = "transient error (451): 4.3.0 Temporary failure, try again later";
        assert_eq!(redact_addresses(plain), plain);
    }
}
