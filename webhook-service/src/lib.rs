//! The webhook-service: every outbound HTTP call of the system, durably.
//!
//! Each call is a row in `deliveries` with its state, attempt count and `next_attempt_at`;
//! workers claim due rows and send them through the SSRF-guarded egress client, record each
//! attempt, and reschedule by the retry policy. Three kinds of calls share that engine:
//! - signed webhooks (Standard Webhooks) to the endpoints subscribed to public sign-up events,
//!   fanned out from the events this service consumes from its quorum queue;
//! - scheduled requests posted to `POST /v1/jobs` (`execute_at`, retry policy), and the signed
//!   report of each job's outcome to its `notify` URL;
//! - phone verification codes by SMS (`sms`), through a Twilio-compatible or templated HTTP
//!   gateway, or as files in development.
//!
//! The modules are private; what the binary, the all-in-one runner and the tests use is
//! re-exported here. One is public: [`signing`], which receivers written in Rust can use to
//! verify our webhooks.
//!
//! - `settings`: [`Settings`] (`DATABASE_URL`, `AMQP_URL`, `HTTP_ADDR`, `WEBHOOK_*`, …).
//! - `startup`: [`Application`]: build it from [`Settings`], run it until a shutdown token.
//! - `api`: the management and job API (`/v1/…`, bearer token), health, metrics, OpenAPI.
//! - `engine`: claiming due deliveries, sending, recording attempts, retrying, endpoint health.
//! - `retry`: the retry policy: schedule, jitter, which outcomes retry, `Retry-After`.
//! - `egress`: the outbound HTTP client: SSRF guard at connect time, no redirects, no proxies,
//!   bounded sizes and timeouts, the error kinds.
//! - [`signing`]: Standard Webhooks secrets (`whsec_…`), signatures and their verification.
//! - `consumer`: sign-up events from the broker → public webhook events → deliveries.
//! - `public_events`: the public, versioned, secret-free webhook event schemas.
//! - `sms`: `PhoneVerificationRequestedV1` → one `sms` delivery; the gateways, the text.
//! - `jobs`: scheduled requests: parsing a job, its delivery, the outcome report to `notify`.
//! - `store`: inserting deliveries (one function every producer uses) and the due signal.
//! - `entity`, `migration`: the database.

#![allow(dead_code, reason = "skeleton: the modules are being filled in")]

mod api;
mod consumer;
mod egress;
mod engine;
mod entity;
mod jobs;
mod migration;
mod public_events;
mod retry;
mod settings;
pub mod signing;
mod sms;
mod startup;
mod state;
mod store;

pub use settings::{ApiToken, Settings, SmsBodyEncoding, SmsGateway, SmsHeaders, SmsSecret};
pub use startup::Application;
