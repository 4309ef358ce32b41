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

/// Deletes a test's exchange and queues when dropped (also when the test panics), so test runs
/// do not leave quorum queues behind on the shared broker.
#[derive(Debug)]
pub struct AmqpCleanup {
    topology: crate::topology::Topology,
    extra_queues: Vec<String>,
}

impl AmqpCleanup {
    /// Cleans up every name of `topology`.
    pub fn for_topology(topology: &crate::topology::Topology) -> Self {
        Self {
            topology: topology.clone(),
            extra_queues: Vec::new(),
        }
    }

    /// Also deletes `queue`.
    pub fn add_queue(&mut self, queue: String) {
        self.extra_queues.push(queue);
    }
}

impl Drop for AmqpCleanup {
    fn drop(&mut self) {
        let topology = self.topology.clone();
        let extra_queues = std::mem::take(&mut self.extra_queues);
        // Drop cannot await: delete from a short-lived runtime on its own thread.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(connection) = crate::amqp::connect(&amqp_url(), "test-cleanup").await else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    for queue in &extra_queues {
                        let _ = channel
                            .queue_delete(queue.as_str().into(), Default::default())
                            .await;
                    }
                    let _ = topology.delete(&channel).await;
                }
                let _ = connection.close(200, "cleanup done".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}
