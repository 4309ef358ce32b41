//! Operator tooling for the dead-letter queue: list, replay, purge.
//!
//! Listing reads every message without acking and then gives them all back (`nack` with
//! requeue), so it changes nothing. Replaying republishes a dead letter to the work queue with
//! its dead-letter headers removed and the attempt count reset (publisher-confirmed), and only
//! then acks it in the DLQ: a crash in between leaves it in both places, and the inbox turns the
//! second copy into a duplicate. Replay after fixing the cause (e.g. the recipient exists now).

use std::fmt::Write as _;

use anyhow::Context;
use common::topology::Topology;
use lapin::{
    BasicProperties, Channel,
    message::Delivery,
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueuePurgeOptions},
    types::AMQPValue,
};

use crate::publisher::{self, Publisher};

/// One dead-lettered message, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// AMQP `message_id` (the event id), if any.
    pub message_id: Option<String>,
    /// AMQP `type` (the event type), if any.
    pub event_type: Option<String>,
    /// `malformed`, `unknown_type`, `unrenderable`, `rejected`, `exhausted`, or the broker's own
    /// reason (e.g. `delivery_limit`).
    pub category: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Send attempts made.
    pub attempts: i64,
    /// When (RFC 3339), if known.
    pub dead_lettered_at: Option<String>,
    /// Body size in bytes.
    pub size: usize,
}

impl DeadLetter {
    fn from_delivery(delivery: &Delivery) -> Self {
        let p = &delivery.properties;
        let broker_reason = common::amqp::header_text(p, "x-first-death-reason");
        Self {
            message_id: p.message_id().as_ref().map(|s| s.as_str().to_owned()),
            event_type: p.kind().as_ref().map(|s| s.as_str().to_owned()),
            category: common::amqp::header_text(p, publisher::DLQ_CATEGORY)
                .or_else(|| broker_reason.clone())
                .unwrap_or_else(|| "unknown".into()),
            reason: common::amqp::header_text(p, publisher::DLQ_REASON)
                .or_else(|| broker_reason.map(|r| format!("dead-lettered by the broker: {r}")))
                .unwrap_or_default(),
            attempts: common::amqp::header_int(p, publisher::ATTEMPT).unwrap_or(1),
            dead_lettered_at: common::amqp::header_text(p, publisher::DLQ_AT),
            size: delivery.data.len(),
        }
    }
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelection {
    /// The one whose `message_id` is this.
    Id(String),
    /// All of them.
    All,
}

/// A connection to the broker for the operator commands.
#[derive(Debug)]
pub struct DlqClient {
    connection: lapin::Connection,
    channel: Channel,
    publisher: Publisher,
    topology: Topology,
}

impl DlqClient {
    /// Connects with `AMQP_URL` and `AMQP_NAMESPACE` and declares the topology (idempotent).
    ///
    /// # Errors
    /// When the broker is unreachable.
    pub async fn connect(settings: &crate::Settings) -> anyhow::Result<Self> {
        let connection = common::amqp::connect(&settings.amqp_url, "email-service dlq").await?;
        let topology = settings.topology();
        let channel = connection.create_channel().await?;
        topology
            .declare_all(&channel)
            .await
            .context("declaring the topology")?;
        let publisher = Publisher::new(connection.create_channel().await?).await?;
        Ok(Self {
            connection,
            channel,
            publisher,
            topology,
        })
    }

    /// The dead-letter queue's name, namespaced.
    pub fn queue(&self) -> &str {
        &self.topology.email_dlq
    }

    /// Every message in the DLQ, oldest first; the queue is left unchanged.
    ///
    /// # Errors
    /// AMQP errors.
    pub async fn list(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let held = self.fetch_all().await?;
        let letters = held.iter().map(DeadLetter::from_delivery).collect();
        give_back(held).await?;
        Ok(letters)
    }

    /// Republishes the selected dead letters to the work queue and removes them from the DLQ;
    /// returns the replayed ones.
    ///
    /// # Errors
    /// AMQP errors; letters already replayed stay replayed.
    pub async fn replay(&self, selection: &ReplaySelection) -> anyhow::Result<Vec<DeadLetter>> {
        let held = self.fetch_all().await?;
        let mut replayed = Vec::new();
        let mut keep = Vec::new();
        for delivery in held {
            let letter = DeadLetter::from_delivery(&delivery);
            let selected = match selection {
                ReplaySelection::All => true,
                ReplaySelection::Id(id) => letter.message_id.as_deref() == Some(id.as_str()),
            };
            if !selected {
                keep.push(delivery);
                continue;
            }
            self.publisher
                .publish_to_queue(
                    &self.topology.email_queue,
                    &delivery.data,
                    replay_properties(&delivery.properties),
                )
                .await
                .with_context(|| format!("replaying {:?}", letter.message_id))?;
            delivery
                .ack(BasicAckOptions::default())
                .await
                .context("acking a replayed dead letter")?;
            replayed.push(letter);
        }
        give_back(keep).await?;
        Ok(replayed)
    }

    /// Deletes every message in the DLQ; returns how many.
    ///
    /// # Errors
    /// AMQP errors.
    pub async fn purge(&self) -> anyhow::Result<u32> {
        self.channel
            .queue_purge(self.queue().into(), QueuePurgeOptions::default())
            .await
            .with_context(|| format!("purging {}", self.queue()))
    }

    /// Closes the broker connection (best effort: errors are ignored).
    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }

    /// Takes every message of the DLQ without acking it.
    async fn fetch_all(&self) -> anyhow::Result<Vec<Delivery>> {
        let mut held = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(self.queue().into(), BasicGetOptions { no_ack: false })
            .await
            .with_context(|| format!("reading {}", self.queue()))?
        {
            held.push(message.delivery);
        }
        Ok(held)
    }
}

/// `dlq list` output: a header line and one row per letter.
pub fn format_dead_letters(queue: &str, letters: &[DeadLetter]) -> String {
    let mut out = format!("{queue}: {} dead letter(s)\n", letters.len());
    if letters.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<36}  {:<22}  {:>8}  {:<25}  {:<12}  REASON",
        "EVENT ID", "TYPE", "ATTEMPTS", "DEAD-LETTERED AT", "CATEGORY"
    );
    for l in letters {
        let _ = writeln!(
            out,
            "{:<36}  {:<22}  {:>8}  {:<25}  {:<12}  {}",
            l.message_id.as_deref().unwrap_or("-"),
            l.event_type.as_deref().unwrap_or("-"),
            l.attempts,
            l.dead_lettered_at
                .as_deref()
                .map_or("-", |t| t.get(..25).unwrap_or(t)),
            l.category,
            l.reason
        );
    }
    out
}

fn replay_properties(properties: &BasicProperties) -> BasicProperties {
    let removed = [
        publisher::DLQ_CATEGORY,
        publisher::DLQ_REASON,
        publisher::DLQ_AT,
        publisher::LAST_ERROR,
        "x-death",
        "x-first-death-reason",
        "x-first-death-queue",
        "x-first-death-exchange",
        "x-last-death-reason",
        "x-last-death-queue",
        "x-last-death-exchange",
        "x-delivery-count",
    ];
    let mut changes: Vec<(&str, Option<AMQPValue>)> =
        removed.iter().map(|name| (*name, None)).collect();
    changes.push((publisher::ATTEMPT, Some(AMQPValue::LongLongInt(1))));
    changes.push((
        "x-replayed-at",
        publisher::text(chrono::Utc::now().to_rfc3339()),
    ));
    publisher::with_headers(properties, &changes)
}

/// Gives `held` back to the DLQ, unchanged.
async fn give_back(held: Vec<Delivery>) -> anyhow::Result<()> {
    for delivery in held {
        delivery
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .context("returning a dead letter to the DLQ")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_output_has_a_header_and_one_row_per_letter() {
        let letters = vec![DeadLetter {
            message_id: Some("0191-abc".into()),
            event_type: Some("UserRegisteredV1".into()),
            category: "rejected".into(),
            reason: "permanent: 550 5.1.1 unknown user".into(),
            attempts: 1,
            dead_lettered_at: Some("2026-11-22T04:30:00.123456+00:00".into()),
            size: 300,
        }];
        let out = format_dead_letters("email-service.dlq", &letters);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "email-service.dlq: 1 dead letter(s)");
        assert!(lines[1].starts_with("EVENT ID"));
        assert!(lines[2].contains("0191-abc") && lines[2].contains("550 5.1.1"));
        assert_eq!(format_dead_letters("q", &[]), "q: 0 dead letter(s)\n");
    }
}
