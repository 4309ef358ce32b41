//! Mail transports: SMTP (a pool of concurrent connections) and `.eml` files in a folder (the
//! developer default). Both implement [`MailTransport`]; the consumer does not know which one
//! it talks to.
//!
//! Every failure is classified once, here, into what the consumer must do next:
//! [`SendError::Transient`] (connection refused, timeout, SMTP 4xx: retry later) or
//! [`SendError::Permanent`] (SMTP 5xx such as an unknown recipient: dead-letter).

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
/// `MAIL_DIR`.
#[derive(Debug)]
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
