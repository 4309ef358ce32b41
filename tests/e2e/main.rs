//! End-to-end tests: the four services together against real PostgreSQL, RabbitMQ and an SMTP
//! sink, in-process (`Stack`) and as the all-in-one binary. Each test has its own database,
//! AMQP namespace, sink and ports, so the suite runs in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod database_outage;
mod env_template;
mod helpers;
mod monitoring;
mod phone;
mod proxy;
mod readiness;
mod redaction;
mod reminders;
mod runner;
mod secrets;
mod signup;
mod squatting;
mod webhooks;
