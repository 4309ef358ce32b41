//! Integration tests of the user-service HTTP API against real PostgreSQL (and SQLite where the
//! behaviour differs). Each test gets its own database, so the suite runs in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod edge;
mod guessing;
mod helpers;
mod idempotency;
mod openapi;
mod overload;
mod pages;
mod phone;
mod phone_abuse;
mod process;
mod rate_limits;
mod register;
mod reminders;
mod squatting;
mod validation;
mod verification;
