//! user-service: sign-up over HTTP with a transactional outbox.
//!
//! It owns the users, their verifications and the outbox of the user-service database. Every
//! state change and the event announcing it are written in one transaction; the outbox-relay
//! publishes the events afterwards.
//!
//! The public surface is what `main.rs`, the all-in-one runner and the tests use:
//! [`Application`], [`Settings`] and [`send_due_reminders`] at the root, plus the [`outbox`],
//! [`trace`], [`migration`] and `entity::outbox` modules, which stay public as they were until they
//! move to the `outbox` crate.
//!
//! Modules (private unless linked):
//! - `startup`: `Application` (database, router, listener, graceful shutdown).
//! - `settings`: typed settings from defaults, `CONFIG_FILE` and the environment.
//! - `state`: `AppState`, shared by the handlers.
//! - `routes`: the HTTP handlers, one module per endpoint (`register`, `verify` with the POST
//!   confirmation and the GET page, `resend`, `health`, `openapi`), and the documented router.
//! - `domain`: values that passed validation (`UserEmail`, `NewUser`).
//! - `idempotency`: `Idempotency-Key` storage for registration.
//! - `verification`: issuing link tokens and codes, stored hashed.
//! - `reminder`: the reminder scheduler (`FOR UPDATE SKIP LOCKED`, one transaction per user).
//! - `password`: the `Password` newtype and argon2id hashing off the async threads.
//! - `error`: `ApiError`, the one JSON error shape.
//! - [`outbox`]: appending events to the outbox inside a transaction (+ `pg_notify`).
//! - [`trace`]: correlation id and W3C `traceparent` carried into the events.
//! - [`migration`], [`entity`]: schema (migrated at start-up) and sea-orm entities (`UserStatus`
//!   on `users`, the usability check on `verifications`).

mod domain;
pub mod entity;
mod error;
mod idempotency;
pub mod migration;
pub mod outbox;
mod password;
mod reminder;
mod routes;
mod settings;
mod startup;
mod state;
pub mod trace;
mod verification;

pub use reminder::send_due_reminders;
pub use settings::Settings;
pub use startup::Application;
