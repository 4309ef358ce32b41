//! Building and running the email-service: inbox database, broker, topology, transport,
//! consumer, admin endpoint and the inbox retention task.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use common::{
    amqp::Broker, consumer::ConsumerHealth, settings::Validate as _, shutdown::sleep_or_cancel,
    topology::Topology,
};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    admin, consumer, inbox,
    mailer::{self, Breaker, Destination, MailTransport},
    migration,
    settings::{Settings, SmtpUrl},
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
    broker: Arc<Broker>,
    transport: Arc<dyn MailTransport>,
    templates: Templates,
    admin: TcpListener,
}

impl Application {
    /// Validates the settings, migrates the inbox, connects to the broker, declares the routes
    /// and the retry queues, opens the mail transport and binds `ADMIN_ADDR`.
    ///
    /// # Errors
    /// Invalid settings, or any of those steps failing (the message says which).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Install the recorder before anything records.
        common::telemetry::metrics();
        crate::metrics::register();
        settings.validate()?;
        let templates = Templates::new(&settings.mail_from)?;
        let db = migration::connect_and_migrate(
            &settings.database_url,
            settings.database_max_connections,
        )
        .await?;
        let broker = Arc::new(Broker::new(
            settings.amqp_url.clone(),
            settings.amqp_connection_name.clone(),
            settings.topology(),
        ));
        // Fail fast at start-up (a clear "cannot connect" beats a silent retry loop); later
        // connection losses are retried by `run`. Connecting declares the routes and the retry
        // queues.
        broker.connection().await?;
        let transport = mailer::transport(match &settings.smtp_url {
            Some(SmtpUrl(url)) => Destination::Smtp {
                url,
                pool_size: settings.smtp_pool_size,
                timeout: settings.smtp_timeout,
            },
            None => Destination::Folder(settings.mail_dir.clone()),
        })
        .await?;
        let admin = TcpListener::bind(settings.admin_addr)
            .await
            .with_context(|| format!("binding ADMIN_ADDR {}", settings.admin_addr))?;
        Ok(Self {
            settings: Arc::new(settings),
            db,
            broker,
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

    /// The inbox database, migrated (tests read the inbox rows through it).
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The queue names in use, retry queues included.
    pub fn topology(&self) -> &Topology {
        self.broker.topology()
    }

    /// Consumes until `shutdown` is cancelled, then finishes in-flight sends and returns.
    ///
    /// A lost broker connection is not fatal: in-flight sends finish (their unacked deliveries
    /// come back and the inbox recognises them), readiness reports the broker down, and the
    /// service reconnects with backoff and consumes again
    /// ([`common::consumer::consume_with_reconnect`]). A consumer loop stuck for longer than
    /// `CONSUMER_STALL_TIMEOUT` makes `GET /health/live` answer 503, so an orchestrator
    /// restarts the process.
    ///
    /// # Errors
    /// When the admin server fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            settings,
            db,
            broker,
            transport,
            templates,
            admin,
        } = self;
        let stop = shutdown.child_token();
        let admin_addr = admin.local_addr()?;
        let health = Arc::new(ConsumerHealth::default());
        let breaker = Arc::new(Breaker::new(
            settings.smtp_breaker_threshold,
            settings.smtp_breaker_cooldown,
        ));
        let admin_server = tokio::spawn({
            let router = admin::router(admin::AdminState {
                db: db.clone(),
                broker: broker.clone(),
                consumer: health.clone(),
                smtp: breaker.clone(),
                stall_timeout: settings.consumer_stall_timeout(),
            });
            common::http::serve(
                admin,
                router,
                settings.http_limits(),
                stop.clone().cancelled_owned(),
            )
        });
        tracing::info!(%admin_addr, "email-service admin endpoint listening");
        let purger = tokio::spawn(purge_expired(
            db.clone(),
            settings.inbox_retention,
            stop.clone(),
        ));
        let handler = Arc::new(consumer::Handler::new(
            db,
            transport,
            templates,
            broker.topology().clone(),
            settings.clone(),
            breaker.clone(),
        ));
        // A lost connection: in-flight sends finish, then a fresh connection and channels.
        common::consumer::consume_with_reconnect(&broker, &health, &stop, |connection| {
            let (handler, health, stop) = (handler.clone(), health.clone(), stop.clone());
            async move {
                // For the consumer's retry and dead-letter publishes.
                let publisher_channel = connection
                    .create_channel()
                    .await
                    .context("opening the publisher channel")?;
                consumer::run(&connection, publisher_channel, handler, &health, stop).await
            }
        })
        .await;
        stop.cancel();
        let _ = purger.await;
        let served = admin_server.await;
        broker.close().await;
        tracing::info!("email-service stopped");
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
        if !sleep_or_cancel(PURGE_INTERVAL, &stop).await {
            return;
        }
    }
}
