//! outbox-relay: moves transactional-outbox rows to RabbitMQ without losing one.
//!
//! It is generic: a row is a routing key, headers and payload bytes; event types are opaque.
//! A row is marked published only after the broker confirmed it (acked, not returned), in the
//! transaction that claimed it, so a crash republishes at most the in-flight batches. Several
//! relays may run against one PostgreSQL outbox (`FOR UPDATE SKIP LOCKED`); one aggregate's
//! events are still published in sequence order. On SQLite a single relay works by polling plus
//! an in-process wake-up.
//!
//! Modules:
//! - `startup`: `Application` (build from [`Settings`], run until cancelled).
//! - `settings`: typed settings from defaults, `CONFIG_FILE` and the environment.
//! - `relay`: claim → publish → mark (`Relay::relay_once`), the claim cursor, and the batch
//!   pipelines with their wake-ups and backoff.
//! - `publish`: the publishing protocol: pipelined, `mandatory`, confirmed (a small confirm
//!   window per batch).
//! - `retention`: deleting old published rows in batches.
//! - `admin`: health and Prometheus metrics on `ADMIN_ADDR`.
//! - `metrics`: every series described and created at zero at start-up.
//!
//! Metrics: `outbox_relay_backlog`, `outbox_relay_oldest_unpublished_age_seconds`,
//! `outbox_relay_published_total`, `outbox_relay_confirm_latency_seconds`,
//! `outbox_relay_batch_duration_seconds`, `outbox_relay_publish_failures_total{reason=nack|returned|timeout|channel}`,
//! `outbox_relay_errors_total{kind=database|broker|outbox_missing}`, `outbox_relay_purged_total`.

mod admin;
mod metrics;
mod publish;
mod relay;
mod retention;
mod settings;
mod startup;

pub use publish::{BatchOutcome, FailureKind, Outcome, publish_batch};
pub use relay::{BatchReport, Relay, RelayError};
pub use settings::Settings;
pub use startup::Application;
