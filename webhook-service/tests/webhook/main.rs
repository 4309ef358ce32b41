//! webhook-service integration tests: real PostgreSQL and RabbitMQ, local receivers; one
//! module per area.

#[allow(dead_code, reason = "shared by the test modules; each uses a part")]
mod helpers;
mod signing_interop;
