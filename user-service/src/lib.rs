//! user-service: sign-up over HTTP with a transactional outbox.
//!
//! It owns the users, their verifications and the outbox of the user-service database. Every
//! state change and the event announcing it are written in one transaction; the outbox-relay
//! publishes the events afterwards.
//!
//! Modules:
//! - [`startup`]: `Application` (database, router, listener, graceful shutdown).
//! - [`state`]: `AppState`, shared by the handlers.
//! - [`settings`]: typed settings from defaults, `CONFIG_FILE` and the environment.
//! - `routes`: the HTTP handlers (register, verify, resend, health, OpenAPI) and the documented
//!   router built from them.
//! - [`domain`]: values that passed validation (`NewUser`).
//! - [`idempotency`]: `Idempotency-Key` storage for registration.
//! - [`verification`]: issuing link tokens and codes, stored hashed.
//! - [`reminder`]: the reminder scheduler (`FOR UPDATE SKIP LOCKED`, one transaction per user).
//! - [`password`]: the `Password` newtype and argon2id hashing off the async threads.
//! - [`outbox`]: appending events to the outbox inside a transaction (+ `pg_notify`).
//! - [`trace`]: correlation id and W3C `traceparent` carried into the events.
//! - [`error`]: `ApiError`, the one JSON error shape.
//! - [`migration`], [`entity`]: schema (migrated at start-up) and sea-orm entities.

pub mod domain;
pub mod entity;
pub mod error;
pub mod idempotency;
pub mod migration;
pub mod outbox;
pub mod password;
pub mod reminder;
mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod trace;
pub mod verification;

pub use settings::Settings;
pub use startup::Application;
