//! Test support (feature `testing`): every test gets its own PostgreSQL database and its own
//! AMQP namespace, so suites run in parallel against the real services.
//!
//! `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) names the server
//! and the maintenance database used to create test databases; `AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`) names the broker.

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database};

/// The broker tests use.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A unique, short namespace for AMQP names: `t<uuid>.`.
pub fn unique_namespace() -> String {
    format!("t{}.", uuid::Uuid::new_v4().simple())
}

/// Creates an empty PostgreSQL database named after `label` and returns its URL.
///
/// # Errors
/// When the server is unreachable.
pub async fn fresh_postgres_database(label: &str) -> anyhow::Result<String> {
    let admin_url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    let name = format!(
        "t_{label}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let admin = Database::connect(admin_url.as_str())
        .await
        .with_context(|| format!("connecting to TEST_DATABASE_URL {admin_url}"))?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("creating test database {name}"))?;
    admin.close().await.ok();
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(base, _)| base);
    Ok(format!("{base}/{name}"))
}
