//! RabbitMQ names and the topology declared at start-up.
//!
//! ```text
//! signup.events (topic) ──user.registered.v1 / …reminder.v1 / …resent.v1 / user.verified.v1
//!                          / user.signup_attempted.v1──▶ email-service (quorum)
//!        email-service.retry.<delay> (TTL = delay) ──dead-letter──▶ email-service
//!        email-service.dlq (quorum)  ◀── permanent failures, exhausted retries, delivery-limit overflow
//!                       ──user.registered.v1 / …reminder.v1 / …resent.v1 / user.verified.v1
//!                          ──▶ webhook-service (quorum)
//!        webhook-service.dlq (quorum) ◀── undecodable events, delivery-limit overflow
//! ```
//!
//! The topology has three parts, declared by different services:
//! - the *routes* ([`Topology::declare`]): the exchange, the email-service's work queue with its
//!   bindings and its dead-letter queue. The publisher (outbox-relay) declares them at start-up
//!   as well as the consumer (email-service): declaring is idempotent, and an event published
//!   before the email-service ever started is kept in its queue instead of being dropped as
//!   unroutable.
//! - the email-service's *retry queues* ([`Topology::declare_retry_queues`]), one per delay of
//!   its retry ladder. Only the email-service declares them: it owns the ladder, so no other
//!   service has to be configured with the same delays.
//! - the webhook-service's queue and its dead-letter queue ([`Topology::webhook_service`]).
//!   Only the webhook-service declares them, at start-up and at every reconnect: a deployment
//!   without a webhook-service has no such queue, so nothing accumulates in one nobody reads. The
//!   flip side: events published before the webhook-service's first start are not turned into
//!   webhooks (there was no queue to keep them). The webhook-service declares the exchange and
//!   its own queues only, not the email routes, so its broker user needs no rights on them.
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

/// The webhook-service work queue.
pub const WEBHOOK_QUEUE: &str = "webhook-service";
/// The webhook-service dead-letter queue (undecodable events, delivery-limit overflow).
pub const WEBHOOK_DLQ: &str = "webhook-service.dlq";

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
    /// [`crate::events::PhoneVerificationRequestedV1`] (carries a code: the webhook-service sends
    /// it by SMS and never publishes it as a webhook).
    pub const PHONE_VERIFICATION_REQUESTED_V1: &str = "user.phone_verification_requested.v1";
    /// [`crate::events::PhoneVerifiedV1`].
    pub const PHONE_VERIFIED_V1: &str = "user.phone_verified.v1";
    /// Every key the email-service queue is bound to (a key added here is bound at the next
    /// start of any service: declaring is idempotent and adds the binding to an existing queue).
    pub const EMAIL_SERVICE_BINDINGS: [&str; 5] = [
        USER_REGISTERED_V1,
        VERIFICATION_REMINDER_V1,
        VERIFICATION_RESENT_V1,
        USER_VERIFIED_V1,
        SIGNUP_ATTEMPTED_V1,
    ];
    /// Every key the webhook-service queue is bound to: the events it turns into public
    /// webhooks. Not [`SIGNUP_ATTEMPTED_V1`]: that someone tried to register an address that
    /// has an account is never published.
    /// [`PHONE_VERIFICATION_REQUESTED_V1`] is bound too: the webhook-service sends its SMS.
    pub const WEBHOOK_SERVICE_BINDINGS: [&str; 6] = [
        USER_REGISTERED_V1,
        VERIFICATION_REMINDER_V1,
        VERIFICATION_RESENT_V1,
        USER_VERIFIED_V1,
        PHONE_VERIFICATION_REQUESTED_V1,
        PHONE_VERIFIED_V1,
    ];
}

/// Redeliveries of one message (e.g. a process crash while handling it, again and again) after
/// which the broker dead-letters it instead of delivering it again: a poison message that kills
/// the consumer can never block the queue.
pub const EMAIL_QUEUE_DELIVERY_LIMIT: i64 = 20;

/// The same bound for the webhook-service queue.
pub const WEBHOOK_QUEUE_DELIVERY_LIMIT: i64 = 20;

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
    /// Webhook-service work queue (declared only by a topology
    /// [`with_webhook_queue`](Self::with_webhook_queue)).
    pub webhook_queue: String,
    /// Webhook-service dead-letter queue, declared with the work queue.
    pub webhook_dlq: String,
    retry_queue_prefix: String,
    /// Whether this topology includes the webhook-service's queues.
    webhook: bool,
    /// Whether this topology includes the email routes (all but the webhook-service's view).
    email_routes: bool,
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
            webhook_queue: name(WEBHOOK_QUEUE),
            webhook_dlq: name(WEBHOOK_DLQ),
            retry_queue_prefix: name(EMAIL_RETRY_QUEUE_PREFIX),
            webhook: false,
            email_routes: true,
        }
    }

    /// The webhook-service's view: the exchange, and its own work queue (bound to
    /// [`routing_keys::WEBHOOK_SERVICE_BINDINGS`]) and dead-letter queue; not the email routes.
    pub fn webhook_service(namespace: &str) -> Self {
        Self {
            email_routes: false,
            ..Self::new(namespace).with_webhook_queue()
        }
    }

    /// This topology plus the webhook-service's queues: [`queues`](Self::queues),
    /// [`delete`](Self::delete) and [`declare_all`](Self::declare_all) cover them too (what a
    /// test of the whole stack cleans up).
    #[must_use]
    pub fn with_webhook_queue(self) -> Self {
        Self {
            webhook: true,
            ..self
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

    /// Every queue of the topology: work queues, dead-letter queues and retry queues.
    pub fn queues(&self) -> Vec<String> {
        let mut queues = Vec::new();
        if self.email_routes {
            queues.extend([self.email_queue.clone(), self.email_dlq.clone()]);
        }
        if !self.retry_delays.is_empty() {
            queues.push(self.email_defer.clone());
        }
        queues.extend(self.retry_delays.iter().map(|d| self.retry_queue(*d)));
        if self.webhook {
            queues.extend([self.webhook_queue.clone(), self.webhook_dlq.clone()]);
        }
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
        self.declare_exchange(channel).await?;
        declare_work_queue(
            channel,
            &self.exchange,
            &self.email_queue,
            &self.email_dlq,
            EMAIL_QUEUE_DELIVERY_LIMIT,
            &routing_keys::EMAIL_SERVICE_BINDINGS,
        )
        .await
    }

    /// Declares the exchange (durable topic).
    async fn declare_exchange(&self, channel: &Channel) -> lapin::Result<()> {
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
            .await
    }

    /// Declares the webhook-service's work queue with its bindings and its dead-letter queue,
    /// when this topology includes them. Idempotent; only the webhook-service calls it (through
    /// [`declare_all`](Self::declare_all)).
    ///
    /// # Errors
    /// Any AMQP error, e.g. a queue that exists with different arguments.
    pub async fn declare_webhook_queue(&self, channel: &Channel) -> lapin::Result<()> {
        if !self.webhook {
            return Ok(());
        }
        declare_work_queue(
            channel,
            &self.exchange,
            &self.webhook_queue,
            &self.webhook_dlq,
            WEBHOOK_QUEUE_DELIVERY_LIMIT,
            &routing_keys::WEBHOOK_SERVICE_BINDINGS,
        )
        .await
    }

    /// Declares everything this topology names: the routes (only the exchange in the
    /// webhook-service's view), the retry queues when it has retry delays (the email-service's
    /// view) and the webhook-service's queues when it has them. What a service's broker
    /// connection runs at every (re)connect.
    ///
    /// # Errors
    /// Any AMQP error, e.g. a queue that exists with different arguments.
    pub async fn declare_all(&self, channel: &Channel) -> lapin::Result<()> {
        if self.email_routes {
            self.declare(channel).await?;
        } else {
            self.declare_exchange(channel).await?;
        }
        self.declare_retry_queues(channel).await?;
        self.declare_webhook_queue(channel).await
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

/// A quorum work queue dead-lettering to `dlq` (declared first, a quorum queue too) after
/// `delivery_limit` deliveries or a reject without requeue, bound to `exchange` by `keys`.
async fn declare_work_queue(
    channel: &Channel,
    exchange: &str,
    queue: &str,
    dlq: &str,
    delivery_limit: i64,
    keys: &[&str],
) -> lapin::Result<()> {
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
        .queue_declare(dlq.into(), durable(), dlq_args)
        .await?;

    let mut work_args = FieldTable::default();
    work_args.insert("x-queue-type".into(), string("quorum"));
    work_args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(delivery_limit),
    );
    work_args.insert("x-dead-letter-exchange".into(), string(""));
    work_args.insert("x-dead-letter-routing-key".into(), string(dlq));
    channel
        .queue_declare(queue.into(), durable(), work_args)
        .await?;
    for key in keys {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
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
    use crate::events::{
        Event, SignupAttemptedV1, UserRegisteredV1, UserVerifiedV1, VerificationReminderV1,
        VerificationResentV1,
    };

    /// The routing key of every event but the signup attempt: those a webhook may carry.
    const PUBLIC_EVENT_KEYS: [&str; 4] = [
        UserRegisteredV1::ROUTING_KEY,
        VerificationReminderV1::ROUTING_KEY,
        VerificationResentV1::ROUTING_KEY,
        UserVerifiedV1::ROUTING_KEY,
    ];

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
        for key in PUBLIC_EVENT_KEYS
            .into_iter()
            .chain([SignupAttemptedV1::ROUTING_KEY])
        {
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
    fn the_webhook_queue_is_bound_to_every_public_event_but_not_to_signup_attempts() {
        for key in PUBLIC_EVENT_KEYS {
            assert!(
                routing_keys::WEBHOOK_SERVICE_BINDINGS.contains(&key),
                "{key}"
            );
        }
        assert!(!routing_keys::WEBHOOK_SERVICE_BINDINGS.contains(&SignupAttemptedV1::ROUTING_KEY));
    }

    #[test]
    fn only_the_webhook_services_view_and_a_cleanup_list_the_webhook_queues() {
        assert_eq!(
            Topology::webhook_service("t1.").queues(),
            ["t1.webhook-service", "t1.webhook-service.dlq"],
            "the webhook-service declares no email queue"
        );
        assert_eq!(
            Topology::new("t1.")
                .with_retry_delays(vec![Duration::from_secs(1)])
                .with_webhook_queue()
                .queues(),
            [
                "t1.email-service",
                "t1.email-service.dlq",
                "t1.email-service.defer",
                "t1.email-service.retry.1000ms",
                "t1.webhook-service",
                "t1.webhook-service.dlq"
            ]
        );
        assert!(
            !Topology::new("t1.")
                .queues()
                .contains(&"t1.webhook-service".to_owned()),
            "the relay and the email-service never declare it"
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
