//! Handling one delivery: decode, refuse forged content, deduplicate, apply the daily cap,
//! render, send, record, then ack, retry or dead-letter.

use std::{
    collections::HashSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context;
use common::events::{DecodeError, SignupEvent};
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
    types::AMQPValue,
};
use uuid::Uuid;

use super::{Handler, Outcome};
use crate::{
    cap,
    inbox::{self, Claim},
    mailer::Admission,
    mailer::SendError,
    publisher::{self, Publisher},
};

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

/// An ack or nack, bounded by [`publisher::CHANNEL_TIMEOUT`]: on a channel that died without
/// telling, the future may never finish, and the broker redelivers the message anyway.
async fn bounded<T>(
    settle: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<(), String> {
    match tokio::time::timeout(publisher::CHANNEL_TIMEOUT, settle).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "no answer within {}s; the channel is gone and the broker will redeliver",
            publisher::CHANNEL_TIMEOUT.as_secs()
        )),
    }
}

impl Handler {
    pub(super) async fn handle(
        &self,
        publisher: &Publisher,
        delivery: Delivery,
        admission: Admission,
    ) {
        metrics::counter!("email_messages_consumed_total").increment(1);
        let attempt = common::amqp::header_int(&delivery.properties, publisher::ATTEMPT)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1)
            .max(1);
        match self.process(publisher, &delivery, attempt, admission).await {
            Ok(outcome) => {
                tracing::Span::current().record("outcome", format!("{outcome:?}").to_lowercase());
                if let Err(error) = bounded(delivery.ack(BasicAckOptions::default())).await {
                    // The outcome is recorded; a redelivery is recognised as a duplicate.
                    tracing::warn!(error, "ack failed");
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
                    Ok(()) => bounded(delivery.ack(BasicAckOptions::default())).await,
                    Err(error) => {
                        tracing::error!(error = format!("{error:#}"), "parking failed; requeueing");
                        metrics::counter!("email_requeued_total").increment(1);
                        let options = BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        };
                        bounded(delivery.nack(options)).await
                    }
                };
                if let Err(error) = acked {
                    tracing::warn!(error, "ack/nack failed");
                }
            }
        }
    }

    async fn process(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        attempt: u32,
        admission: Admission,
    ) -> anyhow::Result<Outcome> {
        let event = match SignupEvent::decode(&delivery.data) {
            Ok(event) => event,
            Err(error) => {
                let category = match error {
                    DecodeError::Malformed { .. } => "malformed",
                    DecodeError::UnknownType { .. } => "unknown_type",
                };
                return self
                    .dead_letter(publisher, delivery, attempt, category, &error.to_string())
                    .await;
            }
        };
        if event.recipient().is_none() {
            // A phone event: the queue is not bound to them, but a misrouted one is acked
            // unmailed rather than dead-lettered (it is valid, only not ours).
            tracing::debug!(event_type = event.event_type(), "not a mail event; ignored");
            return Ok(Outcome::Ignored);
        }
        if let Err(refused) = self.content.check(&event) {
            // Before the inbox: a forged event must not claim a real event's id either.
            metrics::counter!("email_refused_content_total", "field" => refused.field())
                .increment(1);
            return self
                .dead_letter(publisher, delivery, attempt, "forged", &refused.to_string())
                .await;
        }
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
        // The cap is decided with the claim, in its transaction.
        let cap = self
            .settings
            .max_mails_per_address_per_day
            .limit()
            .zip(cap::recipient_key(&event))
            .map(|(limit, recipient_key)| inbox::CapCheck {
                recipient_key,
                limit,
                since: chrono::Utc::now() - cap::WINDOW,
            });
        let claim = inbox::claim(
            &self.db,
            event_id,
            event.event_type(),
            self.instance,
            self.lease(),
            cap.as_ref(),
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
            Claim::AlreadySuppressed => {
                tracing::info!(%event_id, "suppressed before; acking the duplicate");
                metrics::counter!("email_duplicates_total").increment(1);
                return Ok(Outcome::Duplicate);
            }
            Claim::Suppressed => {
                metrics::counter!("email_suppressed_total", "reason" => "daily_cap", "event_type" => event.event_type().to_owned())
                    .increment(1);
                tracing::info!(
                    %event_id,
                    event_type = event.event_type(),
                    recipient_domain = cap::domain_of(event.recipient().unwrap_or_default()),
                    cap = cap.map(|cap| cap.limit),
                    "daily mail cap reached for this address; mail not sent"
                );
                return Ok(Outcome::Suppressed);
            }
            Claim::InFlightElsewhere { remaining } => {
                // Look again exactly when the other instance's claim runs out (it is sending,
                // or it died: then this copy sends), not at the next retry tier.
                let delay = remaining + Duration::from_millis(100);
                tracing::info!(%event_id, ?delay, "in flight in another instance; deferring");
                let properties = delivery
                    .properties
                    .clone()
                    .with_expiration(delay.as_millis().to_string().into());
                publisher
                    .publish_to_queue(&self.topology.email_defer, &delivery.data, properties)
                    .await?;
                return Ok(Outcome::Deferred);
            }
        }

        let message = match self.templates.render(&event) {
            Ok(message) => message,
            Err(error) => {
                // The whole chain: "invalid recipient address: <why>".
                let reason = format!("{:#}", anyhow::Error::from(error));
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
                admission.succeeded();
                // A short database hiccup must not leave the row `sending` (a late duplicate
                // would then be sent again): retry the record a few times.
                let mut recorded = inbox::mark_sent(&self.db, event_id).await;
                for pause_ms in [50, 200, 1000] {
                    if recorded.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    recorded = inbox::mark_sent(&self.db, event_id).await;
                }
                if let Err(error) = recorded {
                    // The mail is out. Acking anyway is the lesser evil: a requeue would send it
                    // again; the row stays `sending` and a late duplicate would resend once.
                    metrics::counter!("email_unrecorded_sends_total").increment(1);
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
                if admission.failed() {
                    // The server is down, not this mail: park it where a retry would go first,
                    // with its attempt count unchanged, until the server answers again.
                    tracing::debug!(%error, "mail server down; parked without using an attempt");
                    publisher
                        .publish_to_queue(
                            &self.topology.retry_queue(self.settings.retry_delay(1)),
                            &delivery.data,
                            delivery.properties.clone(),
                        )
                        .await?;
                    return Ok(Outcome::Paused);
                }
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
                // A rejection is an answer: the server is up.
                admission.succeeded();
                metrics::counter!("email_send_failures_total", "kind" => "permanent").increment(1);
                inbox::mark_failed(&self.db, event_id, &error).await?;
                self.dead_letter(publisher, delivery, attempt, "rejected", &error)
                    .await
            }
        }
    }

    /// The shortest configured retry delay covering `remaining`, else the longest.
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
    common::amqp::header_text(&delivery.properties, publisher::ORIGINAL_ROUTING_KEY)
        .unwrap_or_else(|| delivery.routing_key.as_str().to_owned())
}
