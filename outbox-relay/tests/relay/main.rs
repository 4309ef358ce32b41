//! Integration tests of the outbox relay against the real PostgreSQL and RabbitMQ (and SQLite).
//! Each test has its own database and AMQP namespace, so they run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod admin;
mod claiming;
mod concurrency;
mod failures;
mod helpers;
mod liveness;
mod publishing;
mod secrets;
mod sqlite;
