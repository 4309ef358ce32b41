//! The outbox crate against a real PostgreSQL: its migration under concurrent first starts, and
//! the writer's transaction and wake-up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod migration;
mod reader;
mod writer;
