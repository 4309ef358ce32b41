//! RabbitMQ names and the topology declared at start-up.
//!
//! ```text
//! signup.events (topic) ──user.registered.v1 / …reminder.v1 / …resent.v1 / user.verified.v1
//!                          / user.signup_attempted.v1──▶ email-service (quorum)
//!        email-service.retry.<delay> (TTL = delay) ──dead-letter──▶ email-service
//!        email-service.dlq (quorum)  ◀── permanent failures, exhausted retries, delivery-limit overflow
//! ```
//!
//! The topology has two parts, declared by different services:
//! - the *routes* ([`Topology::declare`]): the exchange, the work queues with their bindings and
//!   the dead-letter queue. Every service that talks to the broker declares them at start-up,
//!   the publisher (outbox-relay) as well as the consumer (email-service): declaring is
//!   idempotent, and an event published before the email-service ever started is kept in its
//!   queue instead of being dropped as unroutable.
//! - the email-service's *retry queues* ([`Topology::declare_retry_queues`]), one per delay of
//!   its retry ladder. Only the email-service declares them: it owns the ladder, so no other
//!   service has to be configured with the same delays.
//!
//! The user-service never connects to the broker: it writes events to its outbox table.
//!
//! Names are constants; a [`Topology`] can be *namespaced* (a prefix on every name) so tests and
//! side-by-side stacks on one broker never see each other's messages.

use std::time::Duration;

use lapin::{
    Channel,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};

/// The topic exchange all sign-up events are published to.
pub const EXCHANGE: &str = "signup.events";
/// The email-service work queue.
pub const EMAIL_QUEUE: &str = "email-service";
/// The email-service dead-letter queue.
pub const EMAIL_DLQ: &str = "email-service.dlq";
/// Prefix of the email-service delayed-retry queues (`email-service.retry.5s`, …).
pub const EMAIL_RETRY_QUEUE_PREFIX: &str = "email-service.retry";
/// The email-service's deferral queue: a message waits there for its own `expiration` (how long
/// another instance may still be sending it), then goes back to the work queue.
pub const EMAIL_DEFER_QUEUE: &str = "email-service.defer";

/// Routing keys on [`EXCHANGE`].
pub mod routing_keys {
    /// [`crate::events::UserRegisteredV1`].
    pub const USER_REGISTERED_V1: &str = "user.registered.v1";
    /// [`crate::events::VerificationReminderV1`].
    pub const VERIFICATION_REMINDER_V1: &str = "user.verification_reminder.v1";
    /// [`crate::events::VerificationResentV1`].
    pub const VERIFICATION_RESENT_V1: &str = "user.verification_resent.v1";
    /// [`crate::events::UserVerifiedV1`].
    pub const USER_VERIFIED_V1: &str = "user.verified.v1";
    /// [`crate::events::SignupAttemptedV1`].
    pub const SIGNUP_ATTEMPTED_V1: &str = "user.signup_attempted.v1";
    /// Every key the email-service queue is bound to (a key added here is bound at the next
    /// start of any service: declaring is idempotent and adds the binding to an existing queue).
    pub const EMAIL_SERVICE_BINDINGS: [&str; 5] = [
        USER_REGISTERED_V1,
        VERIFICATION_REMINDER_V1,
        VERIFICATION_RESENT_V1,
        USER_VERIFIED_V1,
        SIGNUP_ATTEMPTED_V1,
    ];
}

/// Redeliveries of one message (e.g. a process crash while handling it, again and again) after
/// which the broker dead-letters it instead of delivering it again: a poison message that kills
/// the consumer can never block the queue.
pub const EMAIL_QUEUE_DELIVERY_LIMIT: i64 = 20;

/// Delivery limit of the dead-letter queue: high enough that listing it never drops anything.
pub const DLQ_DELIVERY_LIMIT: i64 = 1_000_000;

/// The concrete names in use, optionally namespaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Topic exchange events are published to.
    pub exchange: String,
    /// Email-service work queue.
    pub email_queue: String,
    /// Email-service dead-letter queue.
    pub email_dlq: String,
    /// Email-service deferral queue (per-message TTL), declared with the retry queues.
    pub email_defer: String,
    /// The email-service's retry ladder, one retry queue per delay (see
    /// [`with_retry_delays`](Self::with_retry_delays)); empty in a publisher's topology.
    pub retry_delays: Vec<Duration>,
    retry_queue_prefix: String,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new("")
    }
}

impl Topology {
    /// The routes with every name prefixed by `namespace` (`""` gives the constants), without
    /// retry queues: what a publisher needs.
    pub fn new(namespace: &str) -> Self {
        let name = |base: &str| format!("{namespace}{base}");
        Self {
            exchange: name(EXCHANGE),
            email_queue: name(EMAIL_QUEUE),
            email_dlq: name(EMAIL_DLQ),
            email_defer: name(EMAIL_DEFER_QUEUE),
            retry_delays: Vec::new(),
            retry_queue_prefix: name(EMAIL_RETRY_QUEUE_PREFIX),
        }
    }

    /// The email-service's view: the routes plus one retry queue per delay of its ladder.
    #[must_use]
    pub fn with_retry_delays(self, retry_delays: Vec<Duration>) -> Self {
        Self {
            retry_delays,
            ..self
        }
    }

    /// Name of the retry queue holding messages for `delay` (the delay is part of the name because
    /// a queue's TTL cannot change once declared).
    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.{}ms", self.retry_queue_prefix, delay.as_millis())
    }

    /// Every queue of the topology: work queue, dead-letter queue and retry queues.
    pub fn queues(&self) -> Vec<String> {
        let mut queues = vec![self.email_queue.clone(), self.email_dlq.clone()];
        if !self.retry_delays.is_empty() {
            queues.push(self.email_defer.clone());
        }
        queues.extend(self.retry_delays.iter().map(|d| self.retry_queue(*d)));
        queues
    }

    /// Deletes every queue (with the messages in them!), retry queues included, and the
    /// exchange: tearing down a namespace after a test or a benchmark. Deleting what does not
    /// exist succeeds.
    ///
    /// # Errors
    /// Any AMQP error.
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        for queue in self.queues() {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
    }

    /// Declares the routes: the exchange, the work queue with its bindings and the dead-letter
    /// queue (not the retry queues). Idempotent; every publisher and consumer calls it.
    ///
    /// # Errors
    /// Any AMQP error, e.g. a queue that exists with different arguments.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;

        let mut dlq_args = FieldTable::default();
        dlq_args.insert("x-queue-type".into(), string("quorum"));
        // `dlq list` reads by get-and-requeue, which counts as a delivery. RabbitMQ 4 gives
        // quorum queues a default delivery limit of 20 (then drops the message, as the DLQ has
        // no dead-letter target), so set one that listing can never reach.
        dlq_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DLQ_DELIVERY_LIMIT),
        );
        channel
            .queue_declare(self.email_dlq.as_str().into(), durable(), dlq_args)
            .await?;

        let mut work_args = FieldTable::default();
        work_args.insert("x-queue-type".into(), string("quorum"));
        work_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(EMAIL_QUEUE_DELIVERY_LIMIT),
        );
        work_args.insert("x-dead-letter-exchange".into(), string(""));
        work_args.insert("x-dead-letter-routing-key".into(), string(&self.email_dlq));
        channel
            .queue_declare(self.email_queue.as_str().into(), durable(), work_args)
            .await?;
        for key in routing_keys::EMAIL_SERVICE_BINDINGS {
            channel
                .queue_bind(
                    self.email_queue.as_str().into(),
                    self.exchange.as_str().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Declares everything this topology names: the routes, and the retry queues when it has
    /// retry delays (the email-service's view). What a service's broker connection runs at
    /// every (re)connect.
    ///
    /// # Errors
    /// Any AMQP error, e.g. a queue that exists with different arguments.
    pub async fn declare_all(&self, channel: &Channel) -> lapin::Result<()> {
        self.declare(channel).await?;
        self.declare_retry_queues(channel).await
    }

    /// Declares one retry queue per [`retry_delays`](Self::retry_delays) entry: a message waits
    /// there for the delay (the queue's TTL), then the broker dead-letters it back to the work
    /// queue; and the deferral queue, where each message waits for its own `expiration`.
    /// Idempotent; only the email-service calls it (nothing without retry delays).
    ///
    /// # Errors
    /// Any AMQP error, e.g. a queue that exists with different arguments.
    pub async fn declare_retry_queues(&self, channel: &Channel) -> lapin::Result<()> {
        if self.retry_delays.is_empty() {
            return Ok(());
        }
        let mut defer_args = FieldTable::default();
        defer_args.insert("x-dead-letter-exchange".into(), string(""));
        defer_args.insert(
            "x-dead-letter-routing-key".into(),
            string(&self.email_queue),
        );
        channel
            .queue_declare(self.email_defer.as_str().into(), durable(), defer_args)
            .await?;
        for delay in &self.retry_delays {
            let mut retry_args = FieldTable::default();
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            retry_args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            retry_args.insert("x-dead-letter-exchange".into(), string(""));
            retry_args.insert(
                "x-dead-letter-routing-key".into(),
                string(&self.email_queue),
            );
            channel
                .queue_declare(
                    self.retry_queue(*delay).as_str().into(),
                    durable(),
                    retry_args,
                )
                .await?;
        }
        Ok(())
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_topology_uses_the_documented_names() {
        let t = Topology::default();
        assert!(
            t.retry_delays.is_empty(),
            "a publisher declares no retry queues"
        );
        assert_eq!(t.exchange, "signup.events");
        assert_eq!(t.email_queue, "email-service");
        assert_eq!(t.email_dlq, "email-service.dlq");
        assert_eq!(
            t.retry_queue(Duration::from_secs(5)),
            "email-service.retry.5000ms"
        );
    }

    #[test]
    fn the_email_queue_is_bound_to_every_event() {
        use crate::events::{
            Event, SignupAttemptedV1, UserRegisteredV1, UserVerifiedV1, VerificationReminderV1,
            VerificationResentV1,
        };
        for key in [
            UserRegisteredV1::ROUTING_KEY,
            VerificationReminderV1::ROUTING_KEY,
            VerificationResentV1::ROUTING_KEY,
            UserVerifiedV1::ROUTING_KEY,
            SignupAttemptedV1::ROUTING_KEY,
        ] {
            assert!(routing_keys::EMAIL_SERVICE_BINDINGS.contains(&key), "{key}");
        }
    }

    #[test]
    fn the_email_service_topology_lists_its_retry_and_deferral_queues_for_deletion() {
        let t = Topology::new("t1.").with_retry_delays(vec![Duration::from_secs(1)]);
        assert_eq!(
            t.queues(),
            [
                "t1.email-service",
                "t1.email-service.dlq",
                "t1.email-service.defer",
                "t1.email-service.retry.1000ms"
            ]
        );
        assert_eq!(
            Topology::new("t1.").queues(),
            ["t1.email-service", "t1.email-service.dlq"],
            "a publisher's view has neither"
        );
    }

    #[test]
    fn namespaced_topology_prefixes_every_name() {
        let t = Topology::new("t1.");
        assert_eq!(t.exchange, "t1.signup.events");
        assert_eq!(t.email_dlq, "t1.email-service.dlq");
        assert_eq!(
            t.retry_queue(Duration::from_millis(1500)),
            "t1.email-service.retry.1500ms"
        );
    }
}
