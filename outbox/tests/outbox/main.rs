//! The outbox crate against a real PostgreSQL: its migration under concurrent first starts, and
//! the writer's transaction and wake-up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod migration;
mod reader;
mod writer;

/// An in-memory SQLite outbox (one connection, as SQLite always has).
async fn sqlite_outbox() -> sea_orm::DatabaseConnection {
    common::testing::init_tracing();
    common::database::connect_and_migrate::<migration::Migrator>(
        "sqlite::memory:",
        common::database::PoolOptions::new(1),
    )
    .await
    .unwrap()
}
