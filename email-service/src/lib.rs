//! The email-service: consumes sign-up events and sends each mail once in effect.
//!
//! Duplicates are recognised by event id in an inbox database, transient failures are retried
//! through delayed retry queues, permanent failures and poison messages go to a dead-letter queue
//! that an operator can list, replay and purge.
//!
//! The modules are private; what the binary, the benchmark, the all-in-one runner and the tests
//! use is re-exported here.
//!
//! - `settings`: [`Settings`], the typed, validated configuration (`AMQP_URL`, `SMTP_URL`, …),
//!   and [`SmtpUrl`].
//! - `startup`: [`Application`]: build it from [`Settings`], run it until a shutdown token.
//! - `consumer`: the delivery loop: parse → check → inbox → render → send → record → ack.
//! - `content`: what a mail may carry (links under `PUBLIC_BASE_URL`, six-digit codes).
//! - `inbox`: deduplication and send state per event id ([`find_inbox_entry`]), claims, and the
//!   daily cap's decision in the claim's transaction.
//! - `cap`: the per-address daily mail cap ([`MailCap`], `MAX_MAILS_PER_ADDRESS_PER_DAY`).
//! - `templates`: text + HTML mails rendered from the files in `templates/`.
//! - `mailer`: the mail transports (pooled SMTP with `TCP_NODELAY`, `.eml` files).
//! - `publisher`: confirmed republishing to retry queues and the dead-letter queue.
//! - `dlq`: [`DlqClient`], behind the operator commands `dlq list | replay | purge`.
//! - `admin`: health and metrics endpoint.
//! - `metrics`: every series described and created at zero at start-up.
//! - `migration`: the inbox schema.
//! - `sink` (feature `sink`, on by default): [`SmtpSink`], an in-process SMTP server for tests,
//!   benchmarks and local development.

mod admin;
mod cap;
mod consumer;
mod content;
mod dlq;
mod inbox;
mod mailer;
mod metrics;
mod migration;
mod publisher;
mod settings;
#[cfg(feature = "sink")]
mod sink;
mod startup;
mod templates;

pub use cap::MailCap;
pub use dlq::{DeadLetter, DlqClient, ReplaySelection, format_dead_letters};
pub use inbox::{InboxEntry, SendState, find_inbox_entry};
pub use settings::{Settings, SmtpUrl};
#[cfg(feature = "sink")]
pub use sink::{ReceivedMail, SinkBehaviour, SmtpSink, WaitTimeout};
pub use startup::Application;
