//! webhook-service integration tests: real PostgreSQL and RabbitMQ, local receivers. One
//! binary, one module per area.

mod api;
mod cli;
mod consumer;
mod crash;
mod engine;
#[allow(dead_code, reason = "shared by the test modules; each uses a part")]
mod helpers;
mod jobs;
mod scheduled;
mod signing_interop;
mod sms;
