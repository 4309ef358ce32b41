//! Shared vocabulary of the signup-outbox services.
//!
//! `common` owns what more than one service must agree on, and nothing else: no HTTP handlers
//! (only the server loop every listener shares, the JSON error shape, the request metrics and
//! body bound the APIs share, and the `http` header types the trace context is read from), no
//! service logic.
//!
//! - [`events`]: the versioned event contracts (`UserRegisteredV1`, …) and their envelope.
//! - [`topology`]: exchange, queue and routing-key names, and the idempotent declaration of the
//!   RabbitMQ topology: the routes, declared by the relay and the email-service at start-up, the
//!   email-service's own retry queues, and the webhook-service's own queue. (The user-service
//!   never connects to the broker.)
//! - [`settings`]: layered configuration loading (defaults → optional file → environment) with
//!   errors that name the offending variable.
//! - [`telemetry`]: `tracing` subscriber setup (pretty or JSON) and the Prometheus recorder.
//! - [`trace`]: the correlation id and `traceparent` carried from the HTTP request to the mail
//!   (or the outbound webhook, as a child span), and their header names.
//! - [`shutdown`]: the Ctrl-C / SIGTERM token every `main` hands its application, and
//!   `sleep_or_cancel`.
//! - [`names`]: what a person's name may contain (checked at registration and before mailing).
//! - [`backoff`]: the exponential backoff with jitter every retry loop uses.
//! - [`database`]: connecting to PostgreSQL or SQLite with the shared pool settings, migrating
//!   under an advisory lock (concurrent first starts), the migration-script runner, the
//!   retention cutoff and the PostgreSQL `LISTEN` loop (`database::listen`).
//! - `testing` (feature): a fresh database and AMQP namespace per test, bounded polls, probes,
//!   sample events and `TEST_LOG`-gated logs.
//! - [`http`]: the HTTP server loop of every listener: header-read and idle timeouts, a
//!   connection cap, graceful shutdown ([`http::serve`], [`http::HttpLimits`]); and what the
//!   APIs share: the JSON error shape ([`http::error`]), request metrics ([`http::metrics`]),
//!   the bounded body read ([`http::body`]).
//! - [`amqp`]: connecting to RabbitMQ with a clear error when the broker is unreachable, and the
//!   `Broker` every service keeps its connection in (reconnect, re-declare, readiness).
//! - [`consumer`]: the consume-and-reconnect loop of the email-service and the webhook-service,
//!   the bounded-concurrency dispatch of their deliveries to tasks, and the consumer health
//!   their liveness reads.

pub mod amqp;
pub mod backoff;
pub mod consumer;
pub mod database;
pub mod events;
pub mod http;
pub mod names;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod topology;
pub mod trace;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
