//! The consumer: deliveries from the work queue → content check → inbox check → render → send →
//! record → ack.
//!
//! Manual acks, a prefetch window and at most `MAX_CONCURRENT_SENDS` deliveries in progress.
//! Every delivery ends in exactly one of: ack after the mail was sent and recorded; ack of a
//! duplicate; ack of a mail the daily cap kept back (recorded as `suppressed`); ack after a *confirmed* republish to a retry queue or the dead-letter queue; or,
//! when even that publish fails, a nack with requeue (the broker's delivery limit dead-letters a
//! message that keeps failing this way, so nothing loops forever).
//!
//! Shutdown: stop taking deliveries, let the ones in progress finish (a send is bounded by
//! `SMTP_TIMEOUT`), then close the channel; prefetched deliveries never started go back to the
//! queue.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use common::{consumer::ConsumerHealth, topology::Topology};
use lapin::{
    Connection,
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use sea_orm::DatabaseConnection;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

mod delivery;

use crate::{
    content::ContentPolicy,
    mailer::{Breaker, MailTransport},
    publisher::{self, Publisher},
    settings::Settings,
    templates::Templates,
};

/// Everything one delivery needs; shared by the delivery tasks.
#[derive(Debug)]
pub(crate) struct Handler {
    db: DatabaseConnection,
    transport: Arc<dyn MailTransport>,
    templates: Templates,
    topology: Topology,
    settings: Arc<Settings>,
    /// This process's id in the inbox `claimed_by` column.
    instance: Uuid,
    in_flight: Mutex<HashSet<Uuid>>,
    /// Pauses sending while the mail server is down.
    breaker: Arc<Breaker>,
    /// Refuses forged links and codes.
    content: ContentPolicy,
}

/// What happened to a delivery, for the span and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Sent,
    Duplicate,
    Retried,
    Deferred,
    /// The mail server is down (the breaker is open): parked without counting an attempt.
    Paused,
    /// The recipient reached `MAX_MAILS_PER_ADDRESS_PER_DAY`: recorded, acked, not sent.
    Suppressed,
    DeadLettered,
    /// A valid event that announces no mail (a phone event): acked, nothing sent.
    Ignored,
}

impl Handler {
    pub(crate) fn new(
        db: DatabaseConnection,
        transport: Arc<dyn MailTransport>,
        templates: Templates,
        topology: Topology,
        settings: Arc<Settings>,
        breaker: Arc<Breaker>,
    ) -> Self {
        Self {
            content: ContentPolicy::new(&settings.public_base_url),
            db,
            transport,
            templates,
            topology,
            settings,
            instance: Uuid::new_v4(),
            in_flight: Mutex::new(HashSet::new()),
            breaker,
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
pub(crate) async fn run(
    connection: &Connection,
    publisher_channel: lapin::Channel,
    handler: Arc<Handler>,
    health: &ConsumerHealth,
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
    health.set_consuming(true);
    let tasks = TaskTracker::new();
    let result = common::consumer::dispatch(
        &mut deliveries,
        handler.settings.max_concurrent_sends,
        &tasks,
        &shutdown,
        // While the mail server is down, no delivery is taken: they wait in the queue.
        || handler.breaker.admit(&shutdown),
        |delivery, admission| {
            let span = delivery_span(&delivery);
            let (handler, publisher) = (handler.clone(), publisher.clone());
            async move { handler.handle(&publisher, delivery, admission).await }.instrument(span)
        },
    )
    .await;
    health.set_consuming(false);
    tracing::info!(in_flight = tasks.len(), "email-service stops consuming");
    // Best effort and bounded: the channel may already be gone when the connection was lost.
    let _ = tokio::time::timeout(
        publisher::CHANNEL_TIMEOUT,
        channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
    )
    .await;
    tasks.close();
    // In-flight deliveries finish their send (bounded by SMTP_TIMEOUT) and their acks and
    // publishes (each bounded by CHANNEL_TIMEOUT); this bound is only the last line of defence:
    // whatever is still running after it is abandoned to the broker (it redelivers the
    // messages, the inbox recognises what was sent), so the consumer can reconnect.
    let drain = handler.settings.smtp_timeout + publisher::CHANNEL_TIMEOUT * 3;
    if tokio::time::timeout(drain, tasks.wait()).await.is_err() {
        tracing::warn!(
            abandoned = tasks.len(),
            "deliveries still running after {}s; abandoning them to the broker",
            drain.as_secs()
        );
    }
    drop(deliveries);
    // Closing returns the prefetched deliveries never started to the queue.
    for (name, channel) in [("consumer", &channel), ("publisher", publisher.channel())] {
        match tokio::time::timeout(
            publisher::CHANNEL_TIMEOUT,
            channel.close(200, "shutdown".into()),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, name, "closing channel"),
            Err(_) => tracing::warn!(name, "closing channel timed out"),
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
        attempt = common::amqp::header_int(p, publisher::ATTEMPT).unwrap_or(1),
        redelivered = delivery.redelivered,
        correlation_id = common::amqp::header_text(p, "correlation_id").unwrap_or_default(),
        traceparent = common::amqp::header_text(p, "traceparent").unwrap_or_default(),
        outcome = tracing::field::Empty,
    )
}
