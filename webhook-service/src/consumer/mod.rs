//! The event consumer: sign-up events from the webhook-service's quorum queue → public events
//! ([`crate::public_events`]) → a `messages` row and one `webhook` delivery per subscribed
//! endpoint, in one transaction ([`fanout`]) → wake the engine → ack. A
//! `PhoneVerificationRequestedV1` (never public) becomes one `sms` delivery instead
//! ([`crate::sms`]), whose id is the event's (the inbox of SMS).
//!
//! Every delivery ends in exactly one of:
//! - ack after the commit (the broker forgets the event only once its deliveries are durable);
//! - ack of a duplicate: the event's message row (or SMS delivery) exists (a redelivery),
//!   nothing is added;
//! - ack of an event that has no public counterpart (`user.signup_attempted.v1`), nothing stored;
//! - reject without requeue of an undecodable body: the broker dead-letters it to
//!   `webhook-service.dlq`;
//! - nack with requeue when storing keeps failing although the database answers (the broker's
//!   delivery limit then dead-letters a message that never succeeds). Before that the
//!   delivery is retried in place with backoff for [`IN_PLACE_RETRY`], and for as long as the
//!   database is unreachable: every requeue counts towards the delivery limit, so an outage
//!   must not turn into requeues, or it would dead-letter every event.
//!
//! Up to `PREFETCH` deliveries are unacked at once, and half the database pool is handled
//! concurrently (the engine and the API keep the other half). The loop reconnects with backoff
//! when the broker connection is lost ([`common::consumer::consume_with_reconnect`]); the
//! broker redelivers what was unacked, and the message row makes that harmless. Shutdown: no
//! new delivery is taken, those in progress finish (bounded), prefetched ones go back to the
//! queue.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use common::{
    amqp::header_text,
    backoff::Backoff,
    events::{Envelope, PhoneVerificationRequestedV1, SignupEvent},
    shutdown::sleep_or_cancel,
};
use lapin::{
    BasicProperties, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicQosOptions, BasicRejectOptions,
    },
    types::FieldTable,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub(crate) mod fanout;

use crate::{
    public_events::{self, PublicEvent},
    sms,
    state::AppState,
};
use fanout::Stored;

/// The consumer loop neither consuming nor reconnecting for longer than this is stuck:
/// liveness (`GET /health/live`) should then fail, so an orchestrator restarts the process.
/// Draining a lost connection takes at most [`DRAIN_TIMEOUT`] + 2 × [`CHANNEL_TIMEOUT`].
pub(crate) const CONSUMER_STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest wait for the broker on a channel operation (ack, nack, cancel, close): a live broker
/// answers in milliseconds; longer means the channel died without telling, and the broker
/// redelivers the message anyway.
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long deliveries in progress may take to finish when the consumer stops; whatever runs
/// longer is abandoned to the broker (it redelivers, the message row deduplicates).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a delivery whose storing fails is retried in place (backoff 200 ms doubling to 5 s)
/// before it is given back to the broker, while the database answers.
const IN_PLACE_RETRY: Duration = Duration::from_secs(60);

/// Consumes sign-up events until `shutdown`, reconnecting whenever the broker connection is
/// lost.
pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let (broker, health) = (state.broker.clone(), state.consumer.clone());
    common::consumer::consume_with_reconnect(&broker, &health, &shutdown, |connection| {
        consume(connection, state.clone(), shutdown.clone())
    })
    .await;
}

/// Consumes on one connection until `shutdown` or the channel fails.
async fn consume(
    connection: Arc<Connection>,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let queue = state.broker.topology().webhook_queue.clone();
    let channel = connection
        .create_channel()
        .await
        .context("opening the consumer channel")?;
    channel
        .basic_qos(state.settings.prefetch, BasicQosOptions::default())
        .await
        .context("setting the prefetch")?;
    let tag = format!("webhook-service-{}", uuid::Uuid::new_v4());
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {queue}"))?;
    tracing::info!(%queue, "webhook-service consuming");
    state.consumer.set_consuming(true);
    // Cancelled when this connection is done: a delivery waiting for the database gives up, as
    // its ack could no longer reach the broker (which redelivers it on the next connection).
    let connection_done = shutdown.child_token();
    let concurrency = usize::try_from(state.settings.database_max_connections / 2)
        .unwrap_or(1)
        .max(1);
    let tasks = TaskTracker::new();
    let result = common::consumer::dispatch(
        &mut deliveries,
        concurrency,
        &tasks,
        &shutdown,
        || std::future::ready(Some(())),
        |delivery, ()| {
            let span = delivery_span(&delivery);
            let (state, done) = (state.clone(), connection_done.clone());
            async move { handle(&state, delivery, &done).await }.instrument(span)
        },
    )
    .await;
    state.consumer.set_consuming(false);
    if result.is_err() {
        connection_done.cancel();
    }
    tracing::info!(in_flight = tasks.len(), "webhook-service stops consuming");
    // Best effort and bounded: the channel may already be gone with the connection.
    let _ = tokio::time::timeout(
        CHANNEL_TIMEOUT,
        channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
    )
    .await;
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            abandoned = tasks.len(),
            "deliveries still running after {}s; abandoning them to the broker",
            DRAIN_TIMEOUT.as_secs()
        );
        connection_done.cancel();
    }
    drop(deliveries);
    // Closing returns the prefetched deliveries never started to the queue.
    match tokio::time::timeout(CHANNEL_TIMEOUT, channel.close(200, "shutdown".into())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "closing the consumer channel"),
        Err(_) => tracing::warn!("closing the consumer channel timed out"),
    }
    result
}

/// Handles one delivery to its end (see the module docs); `done` cancels a wait for the
/// database.
async fn handle(state: &AppState, delivery: Delivery, done: &CancellationToken) {
    let outcome = process(state, &delivery, done).await;
    tracing::Span::current().record("outcome", outcome.as_str());
    metrics::counter!("webhook_events_consumed_total", "outcome" => outcome.as_str()).increment(1);
    let settled = match outcome {
        Outcome::Stored | Outcome::Duplicate | Outcome::Unpublished => {
            bounded(delivery.ack(BasicAckOptions::default())).await
        }
        Outcome::DeadLettered => {
            bounded(delivery.reject(BasicRejectOptions { requeue: false })).await
        }
        Outcome::Requeued => {
            let options = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            bounded(delivery.nack(options)).await
        }
    };
    if let Err(error) = settled {
        // The broker redelivers the message; its message row (if committed) deduplicates it.
        tracing::warn!(error, "settling the delivery failed");
    }
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Message and deliveries committed: ack.
    Stored,
    /// Stored before: ack.
    Duplicate,
    /// No public event for this type: ack, nothing stored.
    Unpublished,
    /// Undecodable: reject without requeue (the broker dead-letters it).
    DeadLettered,
    /// The database failed: nack with requeue.
    Requeued,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::Unpublished => "unpublished",
            Self::DeadLettered => "dead_lettered",
            Self::Requeued => "requeued",
        }
    }
}

async fn process(state: &AppState, delivery: &Delivery, done: &CancellationToken) -> Outcome {
    let event = match SignupEvent::decode(&delivery.data) {
        Ok(event) => event,
        Err(error) => {
            // The error never quotes the body (it may hold a verification code).
            tracing::warn!(%error, "undecodable event; dead-lettering");
            return Outcome::DeadLettered;
        }
    };
    let work = match work(&event) {
        Ok(Some(work)) => work,
        Ok(None) => {
            tracing::debug!(
                event_type = event.event_type(),
                "no public event for this type; acking"
            );
            return Outcome::Unpublished;
        }
        Err(error) => {
            tracing::error!(%error, "the public event cannot be serialised; dead-lettering");
            return Outcome::DeadLettered;
        }
    };
    let event_id = event.event_id();
    let traceparent = traceparent(&delivery.properties);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let started = std::time::Instant::now();
    loop {
        let stored = match &work {
            Work::Publish(public) => {
                fanout::store_message(
                    &state.db,
                    event_id,
                    public,
                    traceparent.clone(),
                    state.settings.webhook_request_timeout,
                )
                .await
            }
            Work::Sms(requested) => {
                sms::store(&state.db, &state.settings, requested, traceparent.clone()).await
            }
        };
        let error = match stored {
            Ok(Stored::Fresh { deliveries }) => {
                if deliveries > 0 {
                    state.due.wake();
                }
                tracing::info!(%event_id, event_type = work.kind(), deliveries, "event stored");
                return Outcome::Stored;
            }
            Ok(Stored::Duplicate) => {
                tracing::info!(%event_id, "stored before; acking the duplicate");
                return Outcome::Duplicate;
            }
            Err(error) => error,
        };
        let delay = backoff.next_delay();
        tracing::warn!(%error, retry_in = ?delay, "storing the event failed");
        if !sleep_or_cancel(delay, done).await {
            return Outcome::Requeued;
        }
        if started.elapsed() >= IN_PLACE_RETRY && state.db.ping().await.is_ok() {
            // The database answers, so the failure may be this event's: give it back (the
            // delivery limit dead-letters a message that keeps failing).
            return Outcome::Requeued;
        }
    }
}

/// What a consumed event becomes.
enum Work<'a> {
    /// A public event: a message and its webhooks.
    Publish(PublicEvent),
    /// A verification code: one `sms` delivery.
    Sms(&'a Envelope<PhoneVerificationRequestedV1>),
}

impl Work<'_> {
    /// The public event type, or `sms`.
    fn kind(&self) -> &'static str {
        match self {
            Self::Publish(public) => public.event_type,
            Self::Sms(_) => crate::entity::delivery::kind::SMS,
        }
    }
}

/// What `event` becomes: `None` for an event that is neither published nor sent.
fn work(event: &SignupEvent) -> Result<Option<Work<'_>>, serde_json::Error> {
    if let SignupEvent::PhoneVerificationRequested(requested) = event {
        return Ok(Some(Work::Sms(requested)));
    }
    Ok(public_events::public_event(event)?.map(Work::Publish))
}

/// An ack, nack or reject, bounded by [`CHANNEL_TIMEOUT`]: on a channel that died without
/// telling, the future may never finish, and the broker redelivers the message anyway.
async fn bounded<T>(settle: impl Future<Output = lapin::Result<T>>) -> Result<(), String> {
    match tokio::time::timeout(CHANNEL_TIMEOUT, settle).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "no answer within {}s; the channel is gone and the broker will redeliver",
            CHANNEL_TIMEOUT.as_secs()
        )),
    }
}

/// The W3C `traceparent` header of the message, if it is a valid one (it is sent on as an
/// HTTP header later).
fn traceparent(properties: &BasicProperties) -> Option<String> {
    header_text(properties, common::trace::headers::TRACEPARENT)
        .filter(|v| common::trace::is_valid_traceparent(v))
}

fn delivery_span(delivery: &Delivery) -> tracing::Span {
    let p = &delivery.properties;
    tracing::info_span!(
        "event",
        message_id = p
            .message_id()
            .as_ref()
            .map(|s| s.as_str())
            .unwrap_or_default(),
        event_type = p.kind().as_ref().map(|s| s.as_str()).unwrap_or_default(),
        redelivered = delivery.redelivered,
        correlation_id = header_text(p, common::trace::headers::CORRELATION_ID).unwrap_or_default(),
        traceparent = header_text(p, common::trace::headers::TRACEPARENT).unwrap_or_default(),
        outcome = tracing::field::Empty,
    )
}

#[cfg(test)]
mod tests {
    use lapin::types::AMQPValue;

    use super::*;

    fn with_traceparent(value: &str) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("traceparent".into(), AMQPValue::LongString(value.into()));
        BasicProperties::default().with_headers(headers)
    }

    #[test]
    fn a_traceparent_is_taken_only_when_it_looks_like_one() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent(&with_traceparent(valid)).as_deref(),
            Some(valid)
        );
        assert_eq!(traceparent(&with_traceparent("00-x\r\nEvil: 1")), None);
        assert_eq!(traceparent(&BasicProperties::default()), None);
    }
}
