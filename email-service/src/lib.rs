//! The email-service: consumes sign-up events and sends each mail once in effect.
//!
//! Duplicates are recognised by event id in an inbox database, transient failures are retried
//! through delayed retry queues, permanent failures and poison messages go to a dead-letter queue
//! that an operator can list, replay and purge.
//!
//! - [`settings`]: the typed, validated configuration (`AMQP_URL`, `SMTP_URL`, …).
//! - [`startup`]: [`Application`]: build it from [`Settings`], run it until a shutdown token.
//! - [`consumer`]: the delivery loop: parse → inbox → render → send → record → ack.
//! - [`inbox`]: deduplication and send state per event id.
//! - [`templates`]: text + HTML mails rendered from the files in `templates/`.
//! - [`mailer`]: the mail transports (pooled SMTP with `TCP_NODELAY`, `.eml` files).
//! - [`publisher`]: confirmed republishing to retry queues and the dead-letter queue.
//! - [`dlq`]: the operator commands `dlq list | replay | purge`.
//! - [`admin`]: health and metrics endpoint.
//! - [`migration`]: the inbox schema.
//! - [`sink`] (feature `sink`, on by default): an in-process SMTP server for tests, benchmarks
//!   and local development.

pub mod admin;
pub mod consumer;
pub mod dlq;
pub mod inbox;
pub mod mailer;
pub mod migration;
pub mod publisher;
pub mod settings;
#[cfg(feature = "sink")]
pub mod sink;
pub mod startup;
pub mod templates;

pub use settings::Settings;
pub use startup::Application;
