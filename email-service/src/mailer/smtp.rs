//! SMTP transport: a pool of connections used concurrently, each with `TCP_NODELAY`.
//!
//! Why not lettre's own pooled `AsyncSmtpTransport`: lettre writes the message body and the
//! terminating `\r\n.\r\n` as two small writes on a socket without `TCP_NODELAY`. Nagle's
//! algorithm holds the second write until the first is acked, and the server delays that ACK
//! (it has nothing to say until the terminator arrives): ~40 ms per mail, ~22 mails/s per
//! connection. lettre's transport opens its sockets itself and offers no hook to set the option.
//! So this module opens the TCP connection itself, sets `TCP_NODELAY`, and hands the socket to
//! `AsyncSmtpConnection::connect_with_transport` (STARTTLS and AUTH then run as usual; implicit
//! TLS is layered with `tokio-rustls` over the same no-delay socket). A mail then costs one
//! round trip per SMTP command instead of a 40 ms timer, and the pool runs many of them at once.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lettre::{
    Message,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, TlsParameters},
        extension::ClientId,
    },
};
use tokio::{net::TcpStream, sync::Semaphore};
use tokio_rustls::rustls::pki_types::ServerName;

use super::{MailTransport, SendError};

/// Idle connections older than this are closed instead of reused (servers drop idle clients).
const MAX_IDLE: Duration = Duration::from_secs(30);

/// How to reach and authenticate with the SMTP server, parsed from `SMTP_URL`.
#[derive(Clone)]
pub(crate) struct Endpoint {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
}

#[derive(Clone)]
enum Security {
    /// `smtp://host:port`: plain text (local sinks, relays on the same host).
    Plain,
    /// `smtp://…?tls=required`: STARTTLS, refusing servers that do not offer it.
    StartTls(TlsParameters),
    /// `smtp://…?tls=opportunistic`: STARTTLS when offered.
    Opportunistic(TlsParameters),
    /// `smtps://host:port`: TLS from the first byte.
    Wrapper(Arc<tokio_rustls::TlsConnector>),
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let security = match self.security {
            Security::Plain => "plain",
            Security::StartTls(_) => "starttls",
            Security::Opportunistic(_) => "opportunistic starttls",
            Security::Wrapper(_) => "implicit tls",
        };
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &security)
            .field("authenticated", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Parses `smtp://[user:pass@]host[:port][/ehlo-name][?tls=required|opportunistic]` or
    /// `smtps://[user:pass@]host[:port]`. User and password are percent-decoded.
    ///
    /// # Errors
    /// A message saying what is wrong with the URL.
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url)?;
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let params = || TlsParameters::new(host.clone());
        let (security, default_port) = match (parsed.scheme(), tls.as_deref()) {
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some("required")) => (Security::StartTls(params()?), 587),
            ("smtp", Some("opportunistic")) => (Security::Opportunistic(params()?), 587),
            ("smtps", None) => (Security::Wrapper(Arc::new(super::tls::connector())), 465),
            (scheme, tls) => anyhow::bail!(
                "unsupported scheme {scheme:?} or tls={tls:?} (use smtp://, smtps://, \
                 ?tls=required or ?tls=opportunistic)"
            ),
        };
        let credentials = match parsed.password() {
            Some(password) => Some(Credentials::new(
                percent_decode(parsed.username())?,
                percent_decode(password)?,
            )),
            None if !parsed.username().is_empty() => anyhow::bail!("user without password"),
            None => None,
        };
        // A password over a connection that may stay plain text (no TLS, or STARTTLS that an
        // attacker on the path can strip from the EHLO answer) is a password given away.
        if credentials.is_some() && matches!(security, Security::Plain | Security::Opportunistic(_))
        {
            anyhow::bail!(
                "a user and password need TLS: use smtps:// (implicit TLS) or ?tls=required \
                 (STARTTLS refused by a server that does not offer it); without it or with \
                 tls=opportunistic the password could travel in clear"
            );
        }
        let path = parsed.path().trim_matches('/');
        let hello = if path.is_empty() {
            ClientId::default()
        } else {
            ClientId::Domain(path.to_owned())
        };
        Ok(Self {
            port: parsed.port().unwrap_or(default_port),
            host,
            security,
            credentials,
            hello,
        })
    }

    /// Opens one ready-to-send connection: TCP with `TCP_NODELAY`, TLS as configured, EHLO,
    /// AUTH.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let io = |what: &str, e: std::io::Error| {
            SendError::Transient(format!("{what} {}:{}: {e}", self.host, self.port))
        };
        let lettre = |e: lettre::transport::smtp::Error| classify(&e);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| io("connecting to", e))?;
        tcp.set_nodelay(true)
            .map_err(|e| io("setting TCP_NODELAY on", e))?;
        let mut connection = match &self.security {
            Security::Wrapper(connector) => {
                let peer = tcp.peer_addr().map_err(|e| io("connecting to", e))?;
                let name = ServerName::try_from(self.host.clone()).map_err(|e| {
                    SendError::Permanent(format!("{:?} is not a TLS server name: {e}", self.host))
                })?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| io("TLS handshake with", e))?;
                AsyncSmtpConnection::connect_with_transport(
                    Box::new(super::tls::TlsStream::new(tls, peer)),
                    &self.hello,
                )
                .await
                .map_err(lettre)?
            }
            _ => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                .await
                .map_err(lettre)?,
        };
        match &self.security {
            Security::StartTls(params) => connection
                .starttls(params.clone(), &self.hello)
                .await
                .map_err(lettre)?,
            Security::Opportunistic(params) if connection.can_starttls() => connection
                .starttls(params.clone(), &self.hello)
                .await
                .map_err(lettre)?,
            _ => {}
        }
        if let Some(credentials) = &self.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(lettre)?;
        }
        Ok(connection)
    }
}

/// Sends over up to `pool_size` concurrent connections, reusing idle ones.
#[derive(Debug)]
pub(crate) struct SmtpMailer {
    endpoint: Endpoint,
    idle: Mutex<Vec<Idle>>,
    permits: Semaphore,
    timeout: Duration,
}

struct Idle {
    connection: AsyncSmtpConnection,
    since: Instant,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle").field("since", &self.since).finish()
    }
}

impl SmtpMailer {
    /// A pool of at most `pool_size` connections; `timeout` bounds connecting and each whole
    /// transaction (a hung server costs one timeout, then a retry).
    pub(crate) fn new(endpoint: Endpoint, pool_size: usize, timeout: Duration) -> Self {
        Self {
            endpoint,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(pool_size),
            timeout,
        }
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < MAX_IDLE && !entry.connection.has_broken() {
                return Some(entry.connection);
            }
        }
        None
    }

    fn put_idle(&self, connection: AsyncSmtpConnection) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Idle {
                connection,
                since: Instant::now(),
            });
    }

    async fn fresh(&self) -> Result<AsyncSmtpConnection, SendError> {
        match tokio::time::timeout(self.timeout, self.endpoint.connect()).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Transient(format!(
                "connecting to {}:{} timed out after {:?}",
                self.endpoint.host, self.endpoint.port, self.timeout
            ))),
        }
    }

    /// One mail on `connection`. `pooled`: the connection was idle in the pool, where a
    /// server may have closed it (an I/O error before anything was sent).
    async fn transaction(
        &self,
        connection: &mut AsyncSmtpConnection,
        message: &Message,
        raw: &[u8],
        pooled: bool,
    ) -> Result<(), SendError> {
        match tokio::time::timeout(self.timeout, connection.send(message.envelope(), raw)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => {
                // No SMTP reply (the connection broke) on a connection that was working: the
                // mail may have been accepted with the `250` lost on the way back.
                if error.status().is_none() && !pooled {
                    warn_possible_duplicate(&super::redact_addresses(&error.to_string()));
                }
                Err(classify(&error))
            }
            Err(_) => {
                let error = format!("SMTP transaction timed out after {:?}", self.timeout);
                warn_possible_duplicate(&error);
                Err(SendError::Transient(error))
            }
        }
    }
}

#[async_trait::async_trait]
impl MailTransport for SmtpMailer {
    async fn send(&self, message: &Message) -> Result<(), SendError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| SendError::Transient("SMTP pool closed".into()))?;
        let raw = message.formatted();
        if let Some(mut connection) = self.take_idle() {
            match self.transaction(&mut connection, message, &raw, true).await {
                Ok(()) => {
                    self.put_idle(connection);
                    return Ok(());
                }
                // The server answered: the answer stands.
                Err(SendError::Permanent(error)) => return Err(SendError::Permanent(error)),
                // A reused connection may have been closed by the server while idle: try once
                // more on a fresh one before calling it a failure.
                Err(SendError::Transient(error)) => {
                    tracing::debug!(%error, "pooled SMTP connection failed; reconnecting");
                }
            }
        }
        let mut connection = self.fresh().await?;
        self.transaction(&mut connection, message, &raw, false)
            .await?;
        self.put_idle(connection);
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "SMTP {}:{} ({:?}, pool {})",
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint,
            self.permits.available_permits()
        )
    }
}

/// A transaction died without the server's final answer: whether it accepted the mail is
/// unknown, and the retry that follows may deliver it twice. Said where it happens, so a
/// duplicate a user reports can be explained from the log.
fn warn_possible_duplicate(error: &str) {
    metrics::counter!("email_ambiguous_sends_total").increment(1);
    tracing::warn!(
        error,
        "SMTP connection failed mid-transaction: the server may have accepted the mail, so the \
         retry may deliver it twice"
    );
}

/// 5xx replies and client-side refusals are permanent; everything else (4xx, network, timeout,
/// TLS hiccups) is worth a retry.
///
/// The text is stored (inbox, dead-letter reason) and logged, and servers echo the recipient
/// (`550 5.1.1 <ann@example.com>: Recipient address rejected`): addresses are redacted.
fn classify(error: &lettre::transport::smtp::Error) -> SendError {
    let text = super::redact_addresses(&error.to_string());
    if error.is_permanent() || error.is_client() {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

/// The URL's user or password with its `%XX` escapes decoded.
fn percent_decode(text: &str) -> anyhow::Result<String> {
    let decoded = percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .context("user or password is not valid UTF-8 once percent-decoded")?;
    Ok(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_url_shapes() {
        let plain = Endpoint::parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((plain.host.as_str(), plain.port), ("127.0.0.1", 2525));
        assert!(matches!(plain.security, Security::Plain));
        assert!(plain.credentials.is_none());

        let starttls = Endpoint::parse("smtp://me:p%40ss@mail.example.com?tls=required").unwrap();
        assert_eq!(starttls.port, 587);
        assert!(matches!(starttls.security, Security::StartTls(_)));
        assert!(starttls.credentials.is_some());

        let implicit = Endpoint::parse("smtps://me:pw@mail.example.com").unwrap();
        assert_eq!(implicit.port, 465);
        assert!(matches!(implicit.security, Security::Wrapper(_)));
        assert!(!format!("{implicit:?}").contains("pw"));

        assert!(Endpoint::parse("http://x").is_err());
        assert!(Endpoint::parse("smtp://me:pw@mail.example.com").is_err());
        assert!(Endpoint::parse("smtp://me:pw@mail.example.com?tls=opportunistic").is_err());
        assert!(Endpoint::parse("smtp://x?tls=maybe").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("p%40ss%21").unwrap(), "p@ss!");
        assert_eq!(percent_decode("plain").unwrap(), "plain");
        let error = percent_decode("%ff").unwrap_err();
        assert!(error.to_string().contains("UTF-8"), "{error}");
    }
}
