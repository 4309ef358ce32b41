//! Integration tests of the email-service against the real RabbitMQ, real SQLite/PostgreSQL
//! inboxes and an in-process SMTP sink. Every test has its own AMQP namespace, database and sink.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod ambiguous;
mod breaker;
mod broker_loss;
mod crash;
mod daily_cap;
mod deferral;
mod delivery;
mod failures;
mod forgery;
mod helpers;
