//! Connecting to RabbitMQ: [`connect`] once, or a [`Broker`] that keeps one connection per
//! process, re-opens it after a loss (declaring the service's topology each time) and tells
//! readiness whether it is up. The relay and the email-service both use it.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ConnectionStatus, types::AMQPValue,
};

use crate::{
    settings::{ConnectionUrl, redact_url},
    topology::Topology,
};

/// The broker on a developer machine: RabbitMQ on localhost with the default user.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// RabbitMQ could not be reached; the message says how to start one. The lapin error is the
/// `source`, not part of the message: an error chain print (`{:#}`, anyhow's `Debug`) shows it
/// once, after the advice.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot connect to RabbitMQ at {url}. Start one with `rabbitmq-server -detached` \
     (installed package) or `scripts/services.sh rabbitmq` (installs it), or set AMQP_URL"
)]
pub struct ConnectError {
    /// The URL with any password removed.
    pub url: String,
    /// The underlying error.
    #[source]
    pub source: lapin::Error,
}

/// Connects to `url`, naming the connection `connection_name` in the management UI.
///
/// # Errors
/// [`ConnectError`] when the broker is unreachable or refuses the credentials.
pub async fn connect(url: &str, connection_name: &str) -> Result<Connection, ConnectError> {
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    Connection::connect(url, properties)
        .await
        .map_err(|source| ConnectError {
            url: redact_url(url),
            source,
        })
}

/// The broker could not be used; always transient (reconnect and retry later).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Opening a channel or declaring the topology failed.
    #[error("setting up an AMQP channel")]
    Channel(#[source] lapin::Error),
}

/// The process's broker connection, opened on first use and re-opened after a loss.
///
/// Every (re)connect declares the whole `topology` (its routes, and its retry queues when it
/// has any): idempotent, and it recreates anything deleted while the service was away.
/// [`is_connected`](Self::is_connected) is what readiness reports.
pub struct Broker {
    url: ConnectionUrl,
    connection_name: String,
    topology: Topology,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// The current connection's status, readable without the async lock (readiness).
    status: Mutex<Option<ConnectionStatus>>,
    redeclare: AtomicBool,
    /// A connection was open before: the next connect is a recovery, and says so.
    was_connected: AtomicBool,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.url)
            .field("connection_name", &self.connection_name)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker handle; nothing is connected until [`connection`](Self::connection) or
    /// [`channel`](Self::channel).
    pub fn new(url: impl Into<ConnectionUrl>, connection_name: String, topology: Topology) -> Self {
        Self {
            url: url.into(),
            connection_name,
            topology,
            connection: tokio::sync::Mutex::new(None),
            status: Mutex::new(None),
            redeclare: AtomicBool::new(false),
            was_connected: AtomicBool::new(false),
        }
    }

    /// The exchange and queue names in use.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether the connection is currently open.
    pub fn is_connected(&self) -> bool {
        self.status
            .lock()
            .map(|s| s.as_ref().is_some_and(ConnectionStatus::connected))
            .unwrap_or(false)
    }

    /// The open connection, connecting (and declaring the topology) first when there is none
    /// or it was lost.
    ///
    /// # Errors
    /// [`BrokerError`] when the broker is unreachable or the topology cannot be declared.
    pub async fn connection(&self) -> Result<Arc<Connection>, BrokerError> {
        let mut guard = self.connection.lock().await;
        if let Some(connection) = guard.as_ref()
            && connection.status().connected()
        {
            if self.redeclare.swap(false, Ordering::Relaxed)
                && let Err(error) = self.declare(connection).await
            {
                self.redeclare.store(true, Ordering::Relaxed);
                return Err(error);
            }
            return Ok(connection.clone());
        }
        if let Some(stale) = guard.take() {
            // Best effort: the connection is already broken or closing.
            let _ = stale.close(200, "reconnecting".into()).await;
        }
        let connection = Arc::new(connect(&self.url, &self.connection_name).await?);
        self.declare(&connection).await?;
        self.redeclare.store(false, Ordering::Relaxed);
        if let Ok(mut status) = self.status.lock() {
            *status = Some(connection.status().clone());
        }
        if self.was_connected.swap(true, Ordering::Relaxed) {
            tracing::info!(connection = %self.connection_name, "RabbitMQ is back: reconnected");
        } else {
            tracing::info!(connection = %self.connection_name, "connected to RabbitMQ");
        }
        Ok(guard.insert(connection).clone())
    }

    /// A new channel on the [`connection`](Self::connection).
    ///
    /// # Errors
    /// [`BrokerError`] when the broker is unreachable or refuses the channel.
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        self.connection()
            .await?
            .create_channel()
            .await
            .map_err(BrokerError::Channel)
    }

    /// Makes the next [`connection`](Self::connection) declare the topology again, e.g. after
    /// a channel broke because an exchange was deleted (404 closes the channel).
    pub fn redeclare(&self) {
        self.redeclare.store(true, Ordering::Relaxed);
    }

    /// Closes the current connection, so that the next [`connection`](Self::connection)
    /// opens a fresh one (a consumer whose channel died cannot tell what else is broken).
    pub async fn disconnect(&self, reason: &str) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.close(200, reason.into()).await;
        }
    }

    /// Closes the connection (graceful shutdown).
    pub async fn close(&self) {
        self.disconnect("shutting down").await;
    }

    /// Declares the topology on a short-lived channel of `connection`.
    async fn declare(&self, connection: &Connection) -> Result<(), BrokerError> {
        let setup = connection
            .create_channel()
            .await
            .map_err(BrokerError::Channel)?;
        let declared = self.topology.declare_all(&setup).await;
        let _ = setup.close(200, "topology declared".into()).await;
        declared.map_err(BrokerError::Channel)
    }
}

/// Reads header `name` as text (an integer header as its decimal digits).
pub fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        other => integer(other).map(|n| n.to_string()),
    }
}

/// Reads header `name` as an integer (a text header holding one too).
pub fn header_int(properties: &BasicProperties, name: &str) -> Option<i64> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    integer(value).or_else(|| match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).parse().ok(),
        _ => None,
    })
}

/// An integer header value of any width.
fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}
