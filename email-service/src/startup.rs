//! Building and running the email-service: inbox database, broker, topology, transport,
//! consumer, admin endpoint and the inbox retention task.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use common::topology::Topology;
use lapin::Connection;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    admin, consumer, inbox,
    mailer::{self, MailTransport},
    migration,
    settings::Settings,
    templates::Templates,
};

/// How often expired inbox rows are purged, and how many per statement.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);
const PURGE_BATCH: u32 = 1000;

/// A built email-service, connected and bound, ready to [`run`](Application::run).
#[derive(Debug)]
pub struct Application {
    settings: Arc<Settings>,
    db: DatabaseConnection,
    connection: Arc<Connection>,
    channel: lapin::Channel,
    topology: Topology,
    transport: Arc<dyn MailTransport>,
    templates: Templates,
    admin: TcpListener,
}

impl Application {
    /// Validates the settings, migrates the inbox, connects to the broker, declares the
    /// topology, opens the mail transport and binds `ADMIN_ADDR`.
    ///
    /// # Errors
    /// Invalid settings, or any of those steps failing (the message says which).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Install the recorder before anything records.
        common::telemetry::metrics();
        settings.validate()?;
        let templates = Templates::new(&settings.mail_from)?;
        let db = migration::connect_and_migrate(
            &settings.database_url,
            settings.database_max_connections,
        )
        .await?;
        let connection = common::amqp::connect(&settings.amqp_url, "email-service").await?;
        let topology = Topology::new(&settings.amqp_namespace, settings.retry_delays.clone());
        let channel = connection.create_channel().await?;
        topology
            .declare(&channel)
            .await
            .context("declaring the RabbitMQ topology")?;
        // The declaring channel becomes the consumer's publisher-confirms channel.
        let transport = mailer::from_settings(&settings).await?;
        let admin = TcpListener::bind(settings.admin_addr)
            .await
            .with_context(|| format!("binding ADMIN_ADDR {}", settings.admin_addr))?;
        Ok(Self {
            settings: Arc::new(settings),
            db,
            connection: Arc::new(connection),
            channel,
            topology,
            transport,
            templates,
            admin,
        })
    }

    /// The bound admin address (useful with port 0).
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn admin_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.admin.local_addr()?)
    }

    /// The inbox database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The queue names in use.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Consumes until `shutdown` is cancelled, then finishes in-flight sends and returns.
    ///
    /// # Errors
    /// When the broker connection is lost or the admin server fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            settings,
            db,
            connection,
            channel,
            topology,
            transport,
            templates,
            admin,
        } = self;
        let stop = shutdown.child_token();
        let admin_addr = admin.local_addr()?;
        let admin_server = tokio::spawn({
            let router = admin::router(admin::AdminState {
                db: db.clone(),
                connection: connection.clone(),
            });
            let stopped = stop.clone().cancelled_owned();
            async move {
                axum::serve(admin, router)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        });
        tracing::info!(%admin_addr, "email-service admin endpoint listening");
        let purger = tokio::spawn(purge_expired(
            db.clone(),
            settings.inbox_retention,
            stop.clone(),
        ));
        let handler = Arc::new(consumer::Handler::new(
            db, transport, templates, topology, settings,
        ));
        let consumed = consumer::run(&connection, channel, handler, stop.clone()).await;
        stop.cancel();
        let _ = purger.await;
        let served = admin_server.await;
        let _ = connection.close(200, "shutdown".into()).await;
        tracing::info!("email-service stopped");
        consumed?;
        served
            .context("admin server task")?
            .context("admin server failed")?;
        Ok(())
    }
}

/// Deletes inbox rows older than the retention, in batches, until `stop`.
async fn purge_expired(db: DatabaseConnection, retention: Duration, stop: CancellationToken) {
    loop {
        loop {
            match inbox::purge_expired(&db, retention, PURGE_BATCH).await {
                Ok(n) if n == u64::from(PURGE_BATCH) => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(rows = n, "purged expired inbox rows");
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "purging the inbox failed");
                    break;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PURGE_INTERVAL) => {}
        }
    }
}
