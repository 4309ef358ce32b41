//! Connecting to RabbitMQ.

use lapin::{Connection, ConnectionProperties};

use crate::settings::redact_url;

/// The broker on a developer machine: RabbitMQ on localhost with the default user.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// RabbitMQ could not be reached; the message says how to start one. The lapin error is the
/// `source`, not part of the message: an error chain print (`{:#}`, anyhow's `Debug`) shows it
/// once, after the advice.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot connect to RabbitMQ at {url}. Start one with `rabbitmq-server -detached` \
     (installed package) or `docker compose up -d rabbitmq`, or set AMQP_URL"
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
