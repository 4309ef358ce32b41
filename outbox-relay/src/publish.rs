//! The publishing protocol: a batch of rows goes out `mandatory` and persistent, at most
//! `window` unconfirmed at a time, and every confirm is awaited (each bounded by the confirm
//! timeout from its publish). A row counts as [`Outcome::Confirmed`] only when the broker acked
//! it *and* did not return it. The benchmark's raw publisher calls the same [`publish_batch`].

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

use futures::{FutureExt, future::join_all};
use lapin::{
    BasicProperties, Channel, Confirmation, PublisherConfirm,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use outbox::OutboxRow;
use tokio::time::Instant;

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
pub async fn publish_batch(
    channel: &Channel,
    exchange: &str,
    rows: &[OutboxRow],
    window: usize,
    confirm_timeout: Duration,
) -> BatchOutcome {
    let window = window.max(1);
    let exchange: ShortString = exchange.into();
    let mut confirms = ConfirmWindow::new(rows.len(), confirm_timeout);
    let mut next = 0;
    while next < rows.len() && !confirms.broken {
        // Make room: wait for the oldest confirm when the window is full, then take every
        // confirm that has already arrived (the broker acks in bursts).
        if confirms.in_flight() >= window {
            confirms.settle_oldest().await;
        }
        confirms.settle_arrived();
        if confirms.broken {
            break;
        }
        // Publish everything the window allows at once. Each `basic_publish` queues its frames
        // when first polled, then waits until lapin's I/O loop has written them; polling them
        // together lets one wake-up of that loop write the lot instead of one round trip to
        // its thread per message. A batch holds at most one row per aggregate, so the order
        // inside it carries no meaning.
        let end = rows.len().min(next + (window - confirms.in_flight()));
        let started = Instant::now();
        let published = join_all(
            rows[next..end]
                .iter()
                .map(|row| publish(channel, &exchange, row)),
        )
        .await;
        for (index, result) in (next..end).zip(published) {
            confirms.published(index, started, result);
        }
        next = end;
    }
    // Await what is in flight even after a failure: an acked row is still published.
    confirms.drain().await;
    confirms.finish(rows)
}

/// One row, `mandatory`, on `exchange` with its routing key.
async fn publish(
    channel: &Channel,
    exchange: &ShortString,
    row: &OutboxRow,
) -> lapin::Result<PublisherConfirm> {
    channel
        .basic_publish(
            exchange.clone(),
            row.routing_key.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            row.payload.as_bytes(),
            properties(row),
        )
        .await
}

/// One publish waiting for its confirm.
struct Pending {
    index: usize,
    started: Instant,
    confirm: PublisherConfirm,
}

/// The confirms of one batch's publishes, in publish order, and what they said so far.
///
/// Returned messages are matched to rows by `message_id`, not by the confirm that carries them:
/// lapin hands a return to whichever confirm completes next, which under pipelining may be
/// another row's.
struct ConfirmWindow {
    confirm_timeout: Duration,
    outcomes: Vec<Option<Outcome>>,
    pending: VecDeque<Pending>,
    returned: HashSet<String>,
    returned_without_id: usize,
    /// A timeout or channel error happened.
    broken: bool,
    latency: metrics::Histogram,
}

impl ConfirmWindow {
    fn new(rows: usize, confirm_timeout: Duration) -> Self {
        Self {
            confirm_timeout,
            outcomes: vec![None; rows],
            pending: VecDeque::new(),
            returned: HashSet::new(),
            returned_without_id: 0,
            broken: false,
            latency: metrics::histogram!("outbox_relay_confirm_latency_seconds"),
        }
    }

    fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Records the result of publishing row `index`: a confirm to wait for, or a failed channel.
    fn published(
        &mut self,
        index: usize,
        started: Instant,
        result: lapin::Result<PublisherConfirm>,
    ) {
        match result {
            Ok(confirm) => self.pending.push_back(Pending {
                index,
                started,
                confirm,
            }),
            Err(error) => {
                self.broken = true;
                self.outcomes[index] = Some(Outcome::Failed(
                    FailureKind::Channel,
                    format!("publish failed: {error}"),
                ));
            }
        }
    }

    /// Waits for the oldest confirm, at most until its confirm timeout.
    async fn settle_oldest(&mut self) {
        if let Some(Pending {
            index,
            started,
            confirm,
        }) = self.pending.pop_front()
        {
            let result = tokio::time::timeout_at(started + self.confirm_timeout, confirm)
                .await
                .ok();
            self.settle(index, started, result);
        }
    }

    /// Takes every confirm that has already arrived, oldest first.
    fn settle_arrived(&mut self) {
        while let Some(pending) = self.pending.front_mut() {
            let Some(result) = (&mut pending.confirm).now_or_never() else {
                break;
            };
            if let Some(Pending { index, started, .. }) = self.pending.pop_front() {
                self.settle(index, started, Some(result));
            }
        }
    }

    /// Waits for every confirm still in flight.
    async fn drain(&mut self) {
        while !self.pending.is_empty() {
            self.settle_oldest().await;
        }
    }

    /// Records one confirm: `None` when it timed out.
    fn settle(
        &mut self,
        index: usize,
        started: Instant,
        result: Option<lapin::Result<Confirmation>>,
    ) {
        let outcome = match result {
            Some(Ok(confirmation)) => {
                self.latency.record(started.elapsed().as_secs_f64());
                let acked = confirmation.is_ack();
                if let Some(message) = confirmation.take_message() {
                    match message.delivery.properties.message_id() {
                        Some(id) => {
                            self.returned.insert(id.to_string());
                        }
                        None => self.returned_without_id += 1,
                    }
                }
                if acked {
                    Outcome::Confirmed
                } else {
                    Outcome::Failed(FailureKind::Nack, "nacked by the broker".into())
                }
            }
            Some(Err(error)) => {
                self.broken = true;
                Outcome::Failed(FailureKind::Channel, format!("channel error: {error}"))
            }
            None => {
                self.broken = true;
                Outcome::Failed(
                    FailureKind::Timeout,
                    format!("no confirm within {:?}", self.confirm_timeout),
                )
            }
        };
        self.outcomes[index] = Some(outcome);
    }

    /// The outcome of every row, once nothing is in flight.
    fn finish(self, rows: &[OutboxRow]) -> BatchOutcome {
        let mut outcomes: Vec<Outcome> = self
            .outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Outcome::Failed(FailureKind::Channel, "not published: channel failed".into())
                })
            })
            .collect();
        if !self.returned.is_empty() || self.returned_without_id > 0 {
            for (row, outcome) in rows.iter().zip(outcomes.iter_mut()) {
                // Without a message id we cannot tell which row came back: fail every row
                // rather than risk marking a returned one.
                if self.returned_without_id > 0 || self.returned.contains(&row.id.to_string()) {
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
        if self.broken {
            // lapin hands a returned message to whichever confirm completes next. After a
            // timeout or channel failure that may have been a confirm we dropped, so an ack seen
            // in this batch no longer proves its row was routed: keep every row pending and
            // republish (duplicates, which consumers deduplicate; never a lost event).
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
            channel_broken: self.broken,
        }
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
