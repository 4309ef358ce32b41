//! The consumer: deliveries from the work queue → inbox check → render → send → record → ack.
//!
//! Manual acks, a prefetch window and at most `MAX_CONCURRENT_SENDS` deliveries in progress.
//! Every delivery ends in exactly one of: ack after the mail was sent and recorded; ack of a
//! duplicate; ack after a *confirmed* republish to a retry queue or the dead-letter queue; or,
//! when even that publish fails, a nack with requeue (the broker's delivery limit dead-letters a
//! message that keeps failing this way, so nothing loops forever).
//!
//! Shutdown: stop taking deliveries, let the ones in progress finish (a send is bounded by
//! `SMTP_TIMEOUT`), then close the channel; prefetched deliveries never started go back to the
//! queue.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use common::{
    events::{DecodeError, SignupEvent},
    topology::Topology,
};
use futures::StreamExt;
use lapin::{
    Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    },
    types::{AMQPValue, FieldTable},
};
use sea_orm::DatabaseConnection;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    inbox::{self, Claim},
    mailer::{MailTransport, SendError},
    publisher::{self, Publisher},
    settings::Settings,
    templates::Templates,
};

/// Everything one delivery needs; shared by the delivery tasks.
#[derive(Debug)]
pub struct Handler {
    /// Inbox database.
    pub db: DatabaseConnection,
    /// Where mails go.
    pub transport: Arc<dyn MailTransport>,
    /// Mail templates.
    pub templates: Templates,
    /// Names of queues.
    pub topology: Topology,
    /// Settings.
    pub settings: Arc<Settings>,
    /// This process's id in the inbox `claimed_by` column.
    pub instance: Uuid,
    in_flight: Mutex<HashSet<Uuid>>,
}

/// What happened to a delivery, for the span and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Sent,
    Duplicate,
    Retried,
    Deferred,
    DeadLettered,
}

impl Handler {
    /// Bundles the dependencies of the delivery tasks.
    pub fn new(
        db: DatabaseConnection,
        transport: Arc<dyn MailTransport>,
        templates: Templates,
        topology: Topology,
        settings: Arc<Settings>,
    ) -> Self {
        Self {
            db,
            transport,
            templates,
            topology,
            settings,
            instance: Uuid::new_v4(),
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    /// A claim older than this is stale: its owner died (a send cannot outlast `SMTP_TIMEOUT`).
    fn lease(&self) -> Duration {
        self.settings.smtp_timeout * 2 + Duration::from_secs(1)
    }
}

/// Consumes the work queue until `shutdown` is cancelled or the channel fails.
///
/// # Errors
/// When the channel cannot be set up or the broker connection is lost.
pub async fn run(
    connection: &Connection,
    publisher_channel: lapin::Channel,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let publisher = Publisher::new(publisher_channel).await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(handler.settings.prefetch, BasicQosOptions::default())
        .await
        .context("setting the prefetch")?;
    let tag = format!("email-service-{}", handler.instance);
    let mut deliveries = channel
        .basic_consume(
            handler.topology.email_queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {}", handler.topology.email_queue))?;
    tracing::info!(
        queue = %handler.topology.email_queue,
        transport = %handler.transport.describe(),
        "email-service consuming"
    );
    let permits = Arc::new(Semaphore::new(handler.settings.max_concurrent_sends));
    let tasks = TaskTracker::new();
    let result = loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            permit = permits.clone().acquire_owned() => permit.context("semaphore closed")?,
        };
        let delivery = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            delivery = deliveries.next() => delivery,
        };
        let delivery = match delivery {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => break Err(error).context("consuming deliveries"),
            None => break Err(anyhow::anyhow!("the broker ended the consumer")),
        };
        let span = delivery_span(&delivery);
        let (handler, publisher) = (handler.clone(), publisher.clone());
        tasks.spawn(
            async move {
                handler.handle(&publisher, delivery).await;
                drop(permit);
            }
            .instrument(span),
        );
    };
    tracing::info!(in_flight = tasks.len(), "email-service stops consuming");
    // Best effort: the channel may already be gone when the connection was lost.
    let _ = channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await;
    tasks.close();
    tasks.wait().await;
    drop(deliveries);
    // Closing returns the prefetched deliveries never started to the queue.
    for (name, channel) in [("consumer", &channel), ("publisher", publisher.channel())] {
        if let Err(error) = channel.close(200, "shutdown".into()).await {
            tracing::warn!(%error, name, "closing channel");
        }
    }
    result
}

fn delivery_span(delivery: &Delivery) -> tracing::Span {
    let p = &delivery.properties;
    tracing::info_span!(
        "delivery",
        message_id = p
            .message_id()
            .as_ref()
            .map(|s| s.as_str())
            .unwrap_or_default(),
        event_type = p.kind().as_ref().map(|s| s.as_str()).unwrap_or_default(),
        attempt = publisher::header_int(p, publisher::ATTEMPT).unwrap_or(1),
        redelivered = delivery.redelivered,
        correlation_id = publisher::header_text(p, "correlation_id").unwrap_or_default(),
        traceparent = publisher::header_text(p, "traceparent").unwrap_or_default(),
        outcome = tracing::field::Empty,
    )
}

/// Removes the event from the in-flight set when the delivery is done, whatever the path.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<Uuid>>,
    id: Uuid,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Handler {
    async fn handle(&self, publisher: &Publisher, delivery: Delivery) {
        metrics::counter!("email_messages_consumed_total").increment(1);
        let attempt = publisher::header_int(&delivery.properties, publisher::ATTEMPT)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1)
            .max(1);
        match self.process(publisher, &delivery, attempt).await {
            Ok(outcome) => {
                tracing::Span::current().record("outcome", format!("{outcome:?}").to_lowercase());
                if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                    // The outcome is recorded; a redelivery is recognised as a duplicate.
                    tracing::warn!(%error, "ack failed");
                }
            }
            Err(error) => {
                // The inbox or a publish failed (database or broker trouble). Park the message
                // in the first retry queue without counting an attempt; if even that fails, give
                // it back to the broker.
                tracing::error!(
                    error = format!("{error:#}"),
                    "delivery failed; parking it for a retry"
                );
                let delay = self.settings.retry_delay(1);
                let parked = publisher
                    .publish_to_queue(
                        &self.topology.retry_queue(delay),
                        &delivery.data,
                        delivery.properties.clone(),
                    )
                    .await;
                let acked = match parked {
                    Ok(()) => delivery.ack(BasicAckOptions::default()).await,
                    Err(error) => {
                        tracing::error!(error = format!("{error:#}"), "parking failed; requeueing");
                        metrics::counter!("email_requeued_total").increment(1);
                        let options = BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        };
                        delivery.nack(options).await
                    }
                };
                if let Err(error) = acked {
                    tracing::warn!(%error, "ack/nack failed");
                }
            }
        }
    }

    async fn process(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        attempt: u32,
    ) -> anyhow::Result<Outcome> {
        let event = match SignupEvent::decode(&delivery.data) {
            Ok(event) => event,
            Err(error) => {
                let category = match error {
                    DecodeError::Malformed(_) => "malformed",
                    DecodeError::UnknownType { .. } => "unknown_type",
                };
                return self
                    .dead_letter(publisher, delivery, attempt, category, &error.to_string())
                    .await;
            }
        };
        let event_id = event.event_id();
        let in_flight = {
            let mut set = self
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // `then`, not `then_some`: a guard built for a duplicate would be dropped here,
            // removing the first delivery's entry while this lock is held.
            set.insert(event_id).then(|| InFlight {
                set: &self.in_flight,
                id: event_id,
            })
        };
        let Some(_in_flight) = in_flight else {
            // Another delivery of this event is being handled by this process right now and
            // still unacked: it owns the outcome.
            metrics::counter!("email_duplicates_total").increment(1);
            return Ok(Outcome::Duplicate);
        };
        let claim = inbox::claim(
            &self.db,
            event_id,
            event.event_type(),
            self.instance,
            self.lease(),
        )
        .await
        .context("claiming the inbox row")?;
        match claim {
            Claim::Fresh | Claim::Retry => {}
            Claim::Resumed => {
                tracing::warn!(%event_id, "previous attempt died mid-send; sending again");
                metrics::counter!("email_resent_after_crash_total").increment(1);
            }
            Claim::AlreadySent => {
                tracing::info!(%event_id, "already sent; acking the duplicate");
                metrics::counter!("email_duplicates_total").increment(1);
                return Ok(Outcome::Duplicate);
            }
            Claim::InFlightElsewhere { remaining } => {
                let delay = self.defer_delay(remaining);
                tracing::info!(%event_id, ?delay, "in flight in another instance; deferring");
                let queue = self.topology.retry_queue(delay);
                let properties = delivery.properties.clone();
                publisher
                    .publish_to_queue(&queue, &delivery.data, properties)
                    .await?;
                return Ok(Outcome::Deferred);
            }
        }

        let message = match self.templates.render(&event) {
            Ok(message) => message,
            Err(error) => {
                let reason = error.to_string();
                inbox::mark_failed(&self.db, event_id, &reason).await?;
                return self
                    .dead_letter(publisher, delivery, attempt, "unrenderable", &reason)
                    .await;
            }
        };
        let started = Instant::now();
        let sent = self.transport.send(&message).await;
        metrics::histogram!("email_send_duration_seconds").record(started.elapsed().as_secs_f64());
        match sent {
            Ok(()) => {
                if let Err(error) = inbox::mark_sent(&self.db, event_id).await {
                    // The mail is out. Acking anyway is the lesser evil: a requeue would send it
                    // again; the row stays `sending` and a late duplicate would resend once.
                    tracing::error!(%error, %event_id, "mail sent but not recorded");
                }
                metrics::counter!("email_sent_total", "event_type" => event.event_type().to_owned())
                    .increment(1);
                tracing::info!(%event_id, "mail sent");
                Ok(Outcome::Sent)
            }
            Err(SendError::Transient(error)) => {
                metrics::counter!("email_send_failures_total", "kind" => "transient").increment(1);
                inbox::mark_failed(&self.db, event_id, &error).await?;
                if attempt >= self.settings.max_attempts {
                    let reason = format!("gave up after {attempt} attempt(s): {error}");
                    return self
                        .dead_letter(publisher, delivery, attempt, "exhausted", &reason)
                        .await;
                }
                let delay = self.settings.retry_delay(attempt);
                tracing::warn!(%error, ?delay, next_attempt = attempt + 1, "transient failure; retrying later");
                let properties = publisher::with_headers(
                    &delivery.properties,
                    &[
                        (
                            publisher::ATTEMPT,
                            Some(AMQPValue::LongLongInt(i64::from(attempt) + 1)),
                        ),
                        (publisher::LAST_ERROR, publisher::text(error)),
                        (
                            publisher::ORIGINAL_ROUTING_KEY,
                            publisher::text(original_routing_key(delivery)),
                        ),
                    ],
                );
                publisher
                    .publish_to_queue(
                        &self.topology.retry_queue(delay),
                        &delivery.data,
                        properties,
                    )
                    .await?;
                metrics::counter!("email_retried_total").increment(1);
                Ok(Outcome::Retried)
            }
            Err(SendError::Permanent(error)) => {
                metrics::counter!("email_send_failures_total", "kind" => "permanent").increment(1);
                inbox::mark_failed(&self.db, event_id, &error).await?;
                self.dead_letter(publisher, delivery, attempt, "rejected", &error)
                    .await
            }
        }
    }

    /// The shortest configured retry delay covering `remaining`, else the longest.
    fn defer_delay(&self, remaining: Duration) -> Duration {
        let delays = &self.topology.retry_delays;
        delays
            .iter()
            .filter(|d| **d >= remaining)
            .min()
            .or_else(|| delays.iter().max())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }

    async fn dead_letter(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        attempt: u32,
        category: &str,
        reason: &str,
    ) -> anyhow::Result<Outcome> {
        tracing::warn!(category, reason, "dead-lettering");
        let properties = publisher::with_headers(
            &delivery.properties,
            &[
                (
                    publisher::ATTEMPT,
                    Some(AMQPValue::LongLongInt(i64::from(attempt))),
                ),
                (publisher::DLQ_CATEGORY, publisher::text(category)),
                (publisher::DLQ_REASON, publisher::text(reason)),
                (
                    publisher::DLQ_AT,
                    publisher::text(chrono::Utc::now().to_rfc3339()),
                ),
                (
                    publisher::ORIGINAL_ROUTING_KEY,
                    publisher::text(original_routing_key(delivery)),
                ),
            ],
        );
        publisher
            .publish_to_queue(&self.topology.email_dlq, &delivery.data, properties)
            .await?;
        metrics::counter!("email_dead_lettered_total", "category" => category.to_owned())
            .increment(1);
        Ok(Outcome::DeadLettered)
    }
}

/// The routing key the event was published with (a retried message arrives through the default
/// exchange with the queue name as key, so the first one is carried in a header).
fn original_routing_key(delivery: &Delivery) -> String {
    publisher::header_text(&delivery.properties, publisher::ORIGINAL_ROUTING_KEY)
        .unwrap_or_else(|| delivery.routing_key.as_str().to_owned())
}
