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
//! - [`register`]: `POST /user/register`.
//! - [`idempotency`]: `Idempotency-Key` replay for registration.
//! - [`verification`]: issuing link tokens and codes, stored hashed.
//! - [`verify`]: `POST /user/verify` (link token or email + code).
//! - [`verify_page`]: `GET /user/verify`, the confirmation page behind the mailed link.
//! - [`resend`]: `POST /user/verification/resend`, rate-limited, no account enumeration.
//! - [`reminder`]: the reminder scheduler (`FOR UPDATE SKIP LOCKED`, one transaction per user).
//! - [`password`]: the `Password` newtype and argon2id hashing off the async threads.
//! - [`outbox`]: appending events to the outbox inside a transaction (+ `pg_notify`).
//! - [`trace`]: correlation id and W3C `traceparent` carried into the events.
//! - [`health`]: liveness, readiness and Prometheus metrics.
//! - [`openapi`]: the OpenAPI document (`GET /openapi.json`), generated from the handlers.
//! - [`error`]: `ApiError`, the one JSON error shape.
//! - [`migration`], [`entity`]: schema (migrated at start-up) and sea-orm entities.

pub mod entity;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod migration;
pub mod openapi;
pub mod outbox;
pub mod password;
pub mod register;
pub mod reminder;
pub mod resend;
pub mod settings;
pub mod startup;
pub mod state;
pub mod trace;
pub mod verification;
pub mod verify;
pub mod verify_page;

pub use settings::Settings;
pub use startup::Application;
