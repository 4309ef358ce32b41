//! Building and running the webhook-service: database, broker, egress client, API, engine and
//! consumer.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use common::{amqp::Broker, settings::Validate as _, topology::Topology};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    api, consumer, egress::Egress, engine, migration, settings::Settings, state::AppState,
    store::DueSignal,
};

/// A built webhook-service, connected and bound, ready to [`run`](Application::run).
pub struct Application {
    state: AppState,
    listener: TcpListener,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Validates the settings, migrates the database, connects to the broker (declaring the
    /// webhook-service's queue), builds the egress client and binds `HTTP_ADDR`.
    ///
    /// # Errors
    /// Invalid settings, or any of those steps failing (the message says which).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        common::telemetry::metrics();
        settings.validate()?;
        if settings.webhook_api_token.is_none() {
            tracing::warn!(
                http_addr = %settings.http_addr,
                "WEBHOOK_API_TOKEN is unset: the API accepts every local client and listens on \
                 loopback only"
            );
        }
        let db = migration::connect_and_migrate(
            &settings.database_url,
            settings.database_max_connections,
        )
        .await?;
        let broker = Arc::new(Broker::new(
            settings.amqp_url.clone(),
            settings.amqp_connection_name.clone(),
            // The exchange and the webhook-service's own queue and dead-letter queue, declared
            // now and at every reconnect.
            Topology::webhook_service(&settings.amqp_namespace),
        ));
        broker.connection().await?;
        let egress = Arc::new(Egress::new(&settings)?);
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding HTTP_ADDR {}", settings.http_addr))?;
        Ok(Self {
            state: AppState {
                db,
                settings: Arc::new(settings),
                egress,
                due: DueSignal::default(),
                broker,
                consumer: Arc::default(),
            },
            listener,
        })
    }

    /// The bound API address (useful with port 0).
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The database, migrated (tests read deliveries and attempts through it).
    pub fn db(&self) -> &DatabaseConnection {
        &self.state.db
    }

    /// Serves the API, consumes events and delivers until `shutdown` is cancelled, then lets
    /// in-flight calls finish and returns.
    ///
    /// # Errors
    /// When the HTTP server fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { state, listener } = self;
        let stop = shutdown.child_token();
        let addr = listener.local_addr()?;
        let server = tokio::spawn(common::http::serve(
            listener,
            api::router(state.clone()),
            state.settings.http_limits(),
            stop.clone().cancelled_owned(),
        ));
        tracing::info!(%addr, "webhook-service API listening");
        let engine = tokio::spawn(engine::run(state.clone(), stop.clone()));
        consumer::run(state.clone(), stop.clone()).await;
        stop.cancel();
        let _ = engine.await;
        let served = server.await;
        state.broker.close().await;
        tracing::info!("webhook-service stopped");
        served
            .context("API server task")?
            .context("API server failed")?;
        Ok(())
    }
}
