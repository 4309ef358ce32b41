//! Building and running the relay: database, broker, batch pipelines, wake-ups, retention and
//! the admin server.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use common::{amqp::Broker, database::PoolOptions, topology::Topology};
use outbox::Wakeup;
use sea_orm::DatabaseConnection;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    admin,
    relay::{Relay, RelayConfig},
    retention,
    settings::Settings,
};

/// A built relay, its admin port bound, ready to [`run`](Application::run).
pub struct Application {
    settings: Settings,
    relay: Arc<Relay>,
    wakeup: Wakeup,
    admin: TcpListener,
}

impl Application {
    /// Connects the database (lazily on PostgreSQL: an unreachable server is retried by the
    /// pipelines, not fatal) and binds `ADMIN_ADDR`. The broker is connected by the first batch.
    ///
    /// # Errors
    /// When the SQLite file cannot be opened or the admin address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool_size = u32::try_from(settings.concurrent_batches()).unwrap_or(18) + 3;
        // Lazily on PostgreSQL: an unreachable server is retried by the pipelines, not fatal.
        let db =
            common::database::connect(&settings.database_url, PoolOptions::new(pool_size).lazy())
                .await?;
        Self::build_with_db(settings, db).await
    }

    /// Like [`build`](Self::build) with an already connected database (the all-in-one runner
    /// may share the user-service's). On PostgreSQL the pool needs
    /// `concurrent_batches() + 2` connections beyond its other users: one per pipeline, one for
    /// `LISTEN`, one spare.
    ///
    /// # Errors
    /// When the admin address cannot be bound.
    pub async fn build_with_db(settings: Settings, db: DatabaseConnection) -> anyhow::Result<Self> {
        common::telemetry::metrics();
        crate::metrics::register();
        // The routes only: the email-service declares its own retry queues.
        let topology = Topology::new(&settings.amqp_namespace);
        let broker = Arc::new(Broker::new(
            settings.amqp_url.clone(),
            settings.amqp_connection_name.clone(),
            topology,
        ));
        let wakeup = Wakeup::default();
        let config = RelayConfig {
            batch_size: settings.relay_batch_size,
            window: usize::try_from(settings.relay_max_in_flight).unwrap_or(usize::MAX),
            confirm_timeout: settings.relay_confirm_timeout,
            poll_interval: settings.relay_poll_interval,
            stall_timeout: settings.stall_timeout(),
        };
        let relay = Arc::new(Relay::new(db, broker, config, wakeup.clone()));
        let admin = TcpListener::bind(settings.admin_addr)
            .await
            .with_context(|| format!("binding ADMIN_ADDR {}", settings.admin_addr))?;
        Ok(Self {
            settings,
            relay,
            wakeup,
            admin,
        })
    }

    /// The relay, for deterministic [`Relay::relay_once`] calls in tests.
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// The pipelines' wake-up: a writer in the same process signals it after committing outbox
    /// rows and the relay publishes them at once instead of at the next poll (the way to get low
    /// latency on SQLite, which has no `LISTEN`).
    pub fn wakeup(&self) -> Wakeup {
        self.wakeup.clone()
    }

    /// The bound admin address (useful with port 0).
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn admin_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.admin.local_addr()?)
    }

    /// Relays until `shutdown` is cancelled, then lets in-flight batches finish (up to the
    /// confirm timeout; abandoned rows stay pending) and closes the broker connection.
    ///
    /// # Errors
    /// When the admin server fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let pipelines = self.settings.concurrent_batches();
        tracing::info!(
            admin = %self.admin_addr()?,
            pipelines,
            batch_size = self.settings.relay_batch_size,
            exchange = %self.relay.broker().topology().exchange,
            "outbox-relay running"
        );
        let mut tasks = JoinSet::new();
        for _ in 0..pipelines {
            let (relay, shutdown) = (self.relay.clone(), shutdown.clone());
            tasks.spawn(async move { relay.run_pipeline(shutdown).await });
        }
        let db = self.relay.db().clone();
        tasks.spawn(outbox::listen(
            db.clone(),
            self.wakeup.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(retention::run(
            db,
            self.settings.relay_retention,
            self.settings.relay_retention_batch,
            shutdown.clone(),
        ));
        let served = common::http::serve(
            self.admin,
            admin::router(self.relay.clone()),
            self.settings.http_limits(),
            shutdown.clone().cancelled_owned(),
        )
        .await
        .context("admin server failed");
        // The server only returns early on failure: stop the pipelines too.
        shutdown.cancel();
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "relay task panicked");
            }
        }
        self.relay.broker().close().await;
        tracing::info!("outbox-relay stopped");
        served
    }
}
