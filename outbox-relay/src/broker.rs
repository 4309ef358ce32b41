//! The relay's broker connection: one per process, re-opened on loss (topology re-declared each
//! time), handing out one confirm-mode channel per batch pipeline. Publishing on those channels
//! is [`crate::publish`].

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use common::topology::Topology;
use lapin::{Channel, Connection, ConnectionStatus, options::ConfirmSelectOptions};

/// The broker could not be used; always transient (reconnect and retry later).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] common::amqp::ConnectError),
    /// Opening a channel or declaring the topology failed.
    #[error("setting up an AMQP channel")]
    Channel(#[source] lapin::Error),
}

/// The process's broker connection, re-opened on demand after a loss.
pub struct Broker {
    url: String,
    connection_name: String,
    topology: Topology,
    connection: tokio::sync::Mutex<Option<Connection>>,
    status: Mutex<Option<ConnectionStatus>>,
    redeclare: AtomicBool,
}

impl Broker {
    /// A broker handle; nothing is connected until [`open_channel`](Self::open_channel).
    pub fn new(url: String, connection_name: String, topology: Topology) -> Self {
        Self {
            url,
            connection_name,
            topology,
            connection: tokio::sync::Mutex::new(None),
            status: Mutex::new(None),
            redeclare: AtomicBool::new(false),
        }
    }

    /// The exchange and queue names in use.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether the connection is currently open (readiness).
    pub fn is_connected(&self) -> bool {
        self.status
            .lock()
            .map(|s| s.as_ref().is_some_and(ConnectionStatus::connected))
            .unwrap_or(false)
    }

    /// A new confirm-mode channel, connecting (and declaring the topology) first when the
    /// connection is missing or was lost.
    ///
    /// # Errors
    /// [`BrokerError`] when the broker is unreachable or refuses the channel.
    pub async fn open_channel(&self) -> Result<Channel, BrokerError> {
        let mut guard = self.connection.lock().await;
        let connection = match guard.take() {
            Some(connection) if connection.status().connected() => guard.insert(connection),
            stale => {
                if let Some(old) = stale {
                    // Best effort: the connection is already broken or closing.
                    let _ = old.close(200, "reconnecting".into()).await;
                }
                let connection = self.connect().await?;
                self.redeclare.store(false, Ordering::Relaxed);
                guard.insert(connection)
            }
        };
        if self.redeclare.swap(false, Ordering::Relaxed) {
            // A channel broke (e.g. the exchange was deleted: 404 closes the channel): declare
            // again so the next batch can succeed without waiting for a reconnect.
            let setup = connection
                .create_channel()
                .await
                .map_err(BrokerError::Channel)?;
            let declared = self.topology.declare(&setup).await;
            let _ = setup.close(200, "topology declared".into()).await;
            if let Err(error) = declared {
                self.redeclare.store(true, Ordering::Relaxed);
                return Err(BrokerError::Channel(error));
            }
        }
        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::Channel)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(BrokerError::Channel)?;
        Ok(channel)
    }

    async fn connect(&self) -> Result<Connection, BrokerError> {
        let connection = common::amqp::connect(&self.url, &self.connection_name).await?;
        let setup = connection
            .create_channel()
            .await
            .map_err(BrokerError::Channel)?;
        // Every (re)connect declares the routes (exchange, work queues, DLQ): idempotent, and it
        // recreates anything deleted while we were away.
        self.topology
            .declare(&setup)
            .await
            .map_err(BrokerError::Channel)?;
        let _ = setup.close(200, "topology declared".into()).await;
        tracing::info!(connection = %self.connection_name, "connected to RabbitMQ");
        if let Ok(mut status) = self.status.lock() {
            *status = Some(connection.status().clone());
        }
        Ok(connection)
    }

    /// Makes the next [`open_channel`](Self::open_channel) declare the topology again.
    pub fn redeclare_topology(&self) {
        self.redeclare.store(true, Ordering::Relaxed);
    }

    /// Closes the connection (graceful shutdown).
    pub async fn close(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.close(200, "shutting down".into()).await;
        }
    }
}
