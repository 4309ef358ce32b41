//! webhook-service integration tests: real PostgreSQL and RabbitMQ, local receivers.

mod consumer;
#[allow(dead_code, reason = "shared by the test modules; each uses a part")]
mod helpers;
