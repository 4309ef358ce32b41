//! user-service: sign-up over HTTP with a transactional outbox.
//!
//! It owns the users, their verifications and the outbox of the user-service database. Every
//! state change and the event announcing it are written in one transaction; the outbox-relay
//! publishes the events afterwards.
//!
//! The public surface is what `main.rs`, the all-in-one runner and the tests use:
//! [`Application`], [`Settings`], [`send_due_reminders`] and
//! [`delete_expired_pending_accounts`] at the root, plus [`migration`]
//! (the runner migrates the database it shares with the relay).
//!
//! Modules (private unless linked):
//! - `startup`: `Application` (database, router, the API and admin listeners on
//!   `common::http::serve`, graceful shutdown).
//! - `middleware`: the API port's layers (request ids, security headers, metrics, load
//!   shedding, timeout, rate limits).
//! - `admin`: the admin port (`ADMIN_ADDR`): health and `GET /metrics`.
//! - `metrics`: every series described and created at zero at start-up.
//! - `settings`: typed settings from defaults, `CONFIG_FILE` and the environment.
//! - `state`: `AppState`, shared by the handlers.
//! - `routes`: the HTTP handlers, one module per endpoint (`register`, `verify` with the POST
//!   confirmation and the GET page, `resend`, `phone` (code check and resend), `health`,
//!   `openapi`), and the documented router.
//! - `pages`: the hosted HTML pages (sign-up form, check your inbox, outcomes), their
//!   templates, stylesheet, security headers and cross-site form refusal.
//! - `domain`: values that passed validation (`UserEmail`, `NewUser`).
//! - `idempotency`: `Idempotency-Key` storage for registration.
//! - `verification`: issuing link tokens and codes, stored hashed.
//! - `reminder`: the reminder scheduler (`FOR UPDATE SKIP LOCKED`, one transaction per user).
//! - `expiry`: the sweeper deleting pending accounts older than `PENDING_ACCOUNT_TTL`
//!   ([`delete_expired_pending_accounts`]).
//! - `signup_attempt`: the rate-limited notice to the owner of an address someone tried to
//!   register again (409).
//! - `phone`: phone verification by SMS code (numbers and their policy, derived codes, send
//!   records and velocity limits, checks); its handlers are `routes::phone` and registration.
//! - `password`: the `Password` newtype and argon2id hashing off the async threads.
//! - `error`: `ApiError`, the one JSON error shape.
//! - `rate_limit`: per-client token buckets on register, verify and resend ([`RateLimit`]).
//! - [`migration`], `entity`: schema (migrated at start-up, the outbox table from the `outbox`
//!   crate) and sea-orm entities (`UserStatus` on `users`, the usability check on
//!   `verifications`).
//!
//! Events are written with `outbox::enqueue` in the handler's transaction, with the request's
//! `common::trace::TraceContext`, and the in-process `outbox::Wakeup` is signalled after the
//! commit.

mod admin;
mod domain;
mod entity;
mod error;
mod expiry;
mod idempotency;
mod metrics;
mod middleware;
pub mod migration;
mod pages;
mod password;
mod phone;
mod rate_limit;
mod reminder;
mod routes;
mod settings;
mod signup_attempt;
mod startup;
mod state;
mod verification;

pub use expiry::delete_expired_pending_accounts;
pub use rate_limit::RateLimit;
pub use reminder::send_due_reminders;
pub use settings::{CountryList, PhoneRegion, Settings};
pub use startup::Application;
pub use verification::CodeKey;
