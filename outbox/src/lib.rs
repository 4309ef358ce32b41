//! The transactional outbox as a library: a state change and the event that announces it
//! commit in one transaction, and a relay publishes the event afterwards.
//!
//! It owns the `outbox` table and everything that reads or writes it, so the table is defined
//! once and any service that must publish an event atomically (the user-service today) uses the
//! same code:
//! - `migration`: the table and its indexes, the [`migrations`] every writer's migrator runs.
//! - `writer`: [`enqueue`] in the caller's transaction (with `pg_notify`), and the in-process
//!   [`Wakeup`] a writer signals after its commit.
//! - `reader`: what the relay does with the table: [`claim_batch`], [`mark_published`],
//!   [`record_failure`], [`backlog`], [`purge_published`].
//! - `listen`: PostgreSQL `LISTEN` on [`NOTIFY_CHANNEL`], waking the relay ([`listen()`]).
//!
//! A row is a routing key, headers (trace context) and payload bytes: the reader never decodes
//! an event. Secrets do not outlive the publish: the writer stores, next to the payload, a copy
//! with the event's [`common::events::Event::SECRET_FIELDS`] blanked ([`REDACTED`]), and
//! [`mark_published`] swaps it in, in the statement that marks the row published. Every value is bound as a parameter, so the same code runs on PostgreSQL and
//! SQLite.

mod entity;
mod listen;
mod migration;
mod reader;
mod wakeup;
mod writer;

pub use listen::listen;
pub use migration::{Migration, RedactedPayloadMigration, migrate_outbox_only, migrations};
pub use reader::{
    Backlog, Marked, OutboxRow, backlog, claim_batch, is_missing_table, mark_published,
    purge_published, record_failure,
};
pub use wakeup::Wakeup;
pub use writer::{REDACTED, enqueue, insert_with_event};

/// PostgreSQL `NOTIFY` channel signalled by every commit that wrote outbox rows.
pub const NOTIFY_CHANNEL: &str = "outbox_wakeup";
