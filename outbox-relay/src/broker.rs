//! RabbitMQ side of the relay: one connection per process (re-opened on loss, topology
//! re-declared each time), one confirm-mode channel per batch pipeline, and pipelined publishing
//! with publisher confirms.
//!
//! [`publish_batch`] is the whole publishing protocol: every row goes out `mandatory` and
//! persistent with its properties, at most `window` unconfirmed at a time; then every confirm is
//! awaited (bounded by the confirm timeout). A row counts as [`Outcome::Confirmed`] only when the
//! broker acked it *and* did not return it. The benchmark's raw publisher calls the same function.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::topology::Topology;
use futures::{FutureExt, future::join_all};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionStatus,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use tokio::time::Instant;

use crate::outbox::OutboxRow;

/// The broker could not be used; always transient (reconnect and retry later).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] common::amqp::ConnectError),
    /// Opening a channel or declaring the topology failed.
    #[error("setting up an AMQP channel: {0}")]
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

/// What happened to one published row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acked by the broker and not returned: safe to mark published.
    Confirmed,
    /// Stays pending; the text goes to `last_error`.
    Failed(FailureKind, String),
}

/// Why a publish did not get confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The broker nacked the message.
    Nack,
    /// `mandatory` and unroutable: the broker returned it.
    Returned,
    /// No confirm within the confirm timeout.
    Timeout,
    /// The channel or connection failed before the confirm.
    Channel,
}

impl FailureKind {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nack => "nack",
            Self::Returned => "returned",
            Self::Timeout => "timeout",
            Self::Channel => "channel",
        }
    }
}

/// The outcome of [`publish_batch`], one entry per row in the order given.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// `outcomes[i]` is the fate of `rows[i]`.
    pub outcomes: Vec<Outcome>,
    /// A timeout or channel error happened: the channel's confirm state is unknown and it must
    /// not be used again.
    pub channel_broken: bool,
}

/// Publishes `rows` to `exchange` with at most `window` unconfirmed publishes, then awaits every
/// confirm (each bounded by `confirm_timeout` from its publish).
///
/// Returned messages are matched to rows by `message_id`, not by the confirm that carries them:
/// lapin hands a return to whichever confirm completes next, which under pipelining may be
/// another row's.
pub async fn publish_batch(
    channel: &Channel,
    exchange: &str,
    rows: &[OutboxRow],
    window: usize,
    confirm_timeout: Duration,
) -> BatchOutcome {
    let window = window.max(1);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; rows.len()];
    let mut pending: VecDeque<(usize, Instant, lapin::PublisherConfirm)> = VecDeque::new();
    let mut returned: HashSet<String> = HashSet::new();
    let mut returned_without_id = 0_usize;
    let mut broken = false;
    let exchange: ShortString = exchange.into();
    let histogram = metrics::histogram!("outbox_relay_confirm_latency_seconds");

    let mut settle = |index: usize,
                      started: Instant,
                      result: Result<Result<Confirmation, lapin::Error>, ()>,
                      outcomes: &mut Vec<Option<Outcome>>,
                      broken: &mut bool| {
        let outcome = match result {
            Ok(Ok(confirmation)) => {
                histogram.record(started.elapsed().as_secs_f64());
                let acked = confirmation.is_ack();
                if let Some(message) = confirmation.take_message() {
                    match message.delivery.properties.message_id() {
                        Some(id) => {
                            returned.insert(id.to_string());
                        }
                        None => returned_without_id += 1,
                    }
                }
                if acked {
                    Outcome::Confirmed
                } else {
                    Outcome::Failed(FailureKind::Nack, "nacked by the broker".into())
                }
            }
            Ok(Err(error)) => {
                *broken = true;
                Outcome::Failed(FailureKind::Channel, format!("channel error: {error}"))
            }
            Err(()) => {
                *broken = true;
                Outcome::Failed(
                    FailureKind::Timeout,
                    format!("no confirm within {confirm_timeout:?}"),
                )
            }
        };
        outcomes[index] = Some(outcome);
    };

    let mut next = 0;
    while next < rows.len() && !broken {
        // Make room: wait for the oldest confirm when the window is full, then take every
        // confirm that has already arrived (the broker acks in bursts).
        if pending.len() >= window
            && let Some((i, started, confirm)) = pending.pop_front()
        {
            let result = tokio::time::timeout_at(started + confirm_timeout, confirm)
                .await
                .map_err(|_| ());
            settle(i, started, result, &mut outcomes, &mut broken);
        }
        while let Some((_, _, confirm)) = pending.front_mut() {
            let Some(result) = confirm.now_or_never() else {
                break;
            };
            if let Some((i, started, _)) = pending.pop_front() {
                settle(i, started, Ok(result), &mut outcomes, &mut broken);
            }
        }
        if broken {
            break;
        }
        // Publish everything the window allows at once. Each `basic_publish` queues its frames
        // when first polled, then waits until lapin's I/O loop has written them; polling them
        // together lets one wake-up of that loop write the lot instead of one round trip to
        // its thread per message. A batch holds at most one row per aggregate, so the order
        // inside it carries no meaning.
        let end = rows.len().min(next + (window - pending.len()));
        let started = Instant::now();
        let published = join_all(rows[next..end].iter().map(|row| {
            channel.basic_publish(
                exchange.clone(),
                row.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                row.payload.as_bytes(),
                properties(row),
            )
        }))
        .await;
        for (index, publish) in (next..end).zip(published) {
            match publish {
                Ok(confirm) => pending.push_back((index, started, confirm)),
                Err(error) => {
                    broken = true;
                    outcomes[index] = Some(Outcome::Failed(
                        FailureKind::Channel,
                        format!("publish failed: {error}"),
                    ));
                }
            }
        }
        next = end;
    }
    // Await what is in flight even after a failure: an acked row is still published.
    while let Some((i, started, confirm)) = pending.pop_front() {
        let result = tokio::time::timeout_at(started + confirm_timeout, confirm)
            .await
            .map_err(|_| ());
        settle(i, started, result, &mut outcomes, &mut broken);
    }

    let mut outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                Outcome::Failed(FailureKind::Channel, "not published: channel failed".into())
            })
        })
        .collect();
    if !returned.is_empty() || returned_without_id > 0 {
        for (row, outcome) in rows.iter().zip(outcomes.iter_mut()) {
            // Without a message id we cannot tell which row came back: fail every row rather
            // than risk marking a returned one.
            if returned_without_id > 0 || returned.contains(&row.id.to_string()) {
                *outcome = Outcome::Failed(
                    FailureKind::Returned,
                    format!(
                        "unroutable: returned by the broker (routing key {})",
                        row.routing_key
                    ),
                );
            }
        }
    }
    if broken {
        // lapin hands a returned message to whichever confirm completes next. After a timeout
        // or channel failure that may have been a confirm we dropped, so an ack seen in this
        // batch no longer proves its row was routed: keep every row pending and republish
        // (duplicates, which consumers deduplicate; never a lost event).
        for outcome in &mut outcomes {
            if matches!(outcome, Outcome::Confirmed) {
                *outcome = Outcome::Failed(
                    FailureKind::Channel,
                    "batch abandoned after a channel failure; republished".into(),
                );
            }
        }
    }
    BatchOutcome {
        outcomes,
        channel_broken: broken,
    }
}

/// AMQP properties of a row: persistent, `message_id` = event id, `type`, JSON content type,
/// creation `timestamp`, and the row's string headers.
fn properties(row: &OutboxRow) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(row.id.to_string().into())
        .with_type(row.event_type.as_str().into())
        .with_content_type("application/json".into())
        .with_timestamp(u64::try_from(row.created_at.timestamp()).unwrap_or_default())
        .with_headers(headers(&row.headers))
}

/// The row's JSON headers object as an AMQP table; non-string values are sent as their JSON text.
/// Malformed JSON yields no headers rather than a stuck row: headers are diagnostics, not data.
fn headers(json: &str) -> FieldTable {
    let mut table = FieldTable::default();
    let Ok(map) = serde_json::from_str::<HashMap<String, serde_json::Value>>(json) else {
        return table;
    };
    for (key, value) in map {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => continue,
            other => other.to_string(),
        };
        table.insert(key.into(), AMQPValue::LongString(LongString::from(text)));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_become_string_fields_and_nulls_are_dropped() {
        let table = headers(r#"{"traceparent":"00-ab-cd-01","n":3,"none":null}"#);
        let inner = table.inner();
        assert_eq!(
            inner.get("traceparent"),
            Some(&AMQPValue::LongString("00-ab-cd-01".into()))
        );
        assert_eq!(inner.get("n"), Some(&AMQPValue::LongString("3".into())));
        assert!(!inner.contains_key("none"));
        assert!(headers("not json").inner().is_empty());
    }
}
