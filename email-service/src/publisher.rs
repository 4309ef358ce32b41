//! Republishing a delivery elsewhere: to a delayed retry queue, to the dead-letter queue, or (a
//! replay) back to the work queue. Every publish waits for the broker's confirm and checks that
//! the message was routed, because the caller acks the original only afterwards: a crash or a
//! failed publish leaves the original unacked, so it is redelivered, never lost.
//!
//! Headers written here (all others are kept, so trace context survives every hop):
//! - `x-attempt`: the number of the send attempt the message is for (1 = first).
//! - `x-last-error`: why the previous attempt failed (retries).
//! - `x-dead-letter-category`: `malformed`, `unknown_type`, `unrenderable`, `rejected`,
//!   `exhausted`; `x-dead-letter-reason`: the full reason; `x-dead-lettered-at`: RFC 3339.
//! - `x-original-routing-key`: the routing key the event was first published with.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use lapin::{
    BasicProperties, Channel,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString},
};

// The headers of the module docs.
pub(crate) const ATTEMPT: &str = "x-attempt";
pub(crate) const LAST_ERROR: &str = "x-last-error";
pub(crate) const DLQ_CATEGORY: &str = "x-dead-letter-category";
pub(crate) const DLQ_REASON: &str = "x-dead-letter-reason";
pub(crate) const DLQ_AT: &str = "x-dead-lettered-at";
pub(crate) const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";

/// Longest wait for the broker on a channel operation (a publish with its confirm, an ack): a
/// live broker answers in milliseconds, so longer means the channel died without telling
/// (a broker restart can leave lapin's futures pending). The delivery is then abandoned to the
/// broker, which redelivers it once the connection is gone.
pub(crate) const CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);

/// A publisher-confirms channel.
#[derive(Debug, Clone)]
pub(crate) struct Publisher {
    channel: Channel,
    // One publish awaiting its confirm at a time: lapin hands a returned (unroutable) message to
    // whichever confirm completes next, so with concurrent publishes task A's return could be
    // reported to task B and A would ack an original whose copy was dropped. Retry and
    // dead-letter publishes are the failure path, so serialising them costs nothing that matters.
    in_flight: Arc<tokio::sync::Mutex<()>>,
    /// A publish timed out: its confirm (or return) may still arrive and be handed to the next
    /// publish, so nothing more is published on this channel.
    abandoned: Arc<AtomicBool>,
}

impl Publisher {
    /// Puts `channel` into confirm mode.
    ///
    /// # Errors
    /// AMQP errors.
    pub(crate) async fn new(channel: Channel) -> anyhow::Result<Self> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        Ok(Self {
            channel,
            in_flight: Arc::default(),
            abandoned: Arc::default(),
        })
    }

    pub(crate) fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes `body` with `properties` to `queue` through the default exchange and waits for
    /// the confirm.
    ///
    /// # Errors
    /// When the broker nacks, returns (no such queue), the channel fails or does not confirm
    /// within [`CHANNEL_TIMEOUT`].
    pub(crate) async fn publish_to_queue(
        &self,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> anyhow::Result<()> {
        let _only_publish_in_flight = self.in_flight.lock().await;
        anyhow::ensure!(
            !self.abandoned.load(Ordering::Relaxed),
            "publisher channel abandoned after a timeout"
        );
        let published = tokio::time::timeout(
            CHANNEL_TIMEOUT,
            self.publish_and_confirm(queue, body, properties),
        )
        .await;
        let Ok(published) = published else {
            self.abandoned.store(true, Ordering::Relaxed);
            anyhow::bail!(
                "no confirm for the publish to {queue} within {}s; channel abandoned",
                CHANNEL_TIMEOUT.as_secs()
            );
        };
        published
    }

    async fn publish_and_confirm(
        &self,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> anyhow::Result<()> {
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties.with_delivery_mode(2),
            )
            .await
            .with_context(|| format!("publishing to {queue}"))?
            .await
            .with_context(|| format!("waiting for the confirm of {queue}"))?;
        anyhow::ensure!(confirm.is_ack(), "broker nacked the publish to {queue}");
        anyhow::ensure!(
            confirm.take_message().is_none(),
            "publish to {queue} was returned unroutable"
        );
        Ok(())
    }
}

/// `properties` with `changes` applied to the headers (`None` removes a header).
pub(crate) fn with_headers(
    properties: &BasicProperties,
    changes: &[(&str, Option<AMQPValue>)],
) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(existing) = properties.headers() {
        for (key, value) in existing.inner() {
            if !changes.iter().any(|(name, _)| *name == key.as_str()) {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    for (name, value) in changes {
        if let Some(value) = value {
            headers.insert((*name).into(), value.clone());
        }
    }
    properties.clone().with_headers(headers)
}

/// `value` as a header value, for [`with_headers`].
pub(crate) fn text(value: impl Into<String>) -> Option<AMQPValue> {
    Some(AMQPValue::LongString(LongString::from(value.into())))
}

#[cfg(test)]
mod tests {
    use common::amqp::{header_int, header_text};

    use super::*;

    #[test]
    fn header_changes_keep_other_headers() {
        let mut headers = FieldTable::default();
        headers.insert(
            "traceparent".into(),
            text("00-abc").unwrap_or(AMQPValue::Void),
        );
        headers.insert(ATTEMPT.into(), AMQPValue::LongLongInt(1));
        headers.insert(LAST_ERROR.into(), text("x").unwrap_or(AMQPValue::Void));
        let properties = BasicProperties::default().with_headers(headers);
        let changed = with_headers(
            &properties,
            &[
                (ATTEMPT, Some(AMQPValue::LongLongInt(2))),
                (LAST_ERROR, None),
            ],
        );
        assert_eq!(header_int(&changed, ATTEMPT), Some(2));
        assert_eq!(
            header_text(&changed, "traceparent").as_deref(),
            Some("00-abc")
        );
        assert_eq!(header_text(&changed, LAST_ERROR), None);
    }
}
