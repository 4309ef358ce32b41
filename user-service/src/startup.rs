//! Building and running the user-service: router, the API and admin listeners, shutdown.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::Router;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    admin, expiry, middleware, migration, pages, password::PasswordHasher, rate_limit::RateLimits,
    reminder, routes, settings::Settings, state::AppState,
};

/// A built user-service, bound to its ports, ready to [`run`](Application::run).
pub struct Application {
    listener: TcpListener,
    admin: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Connects and migrates the database, then binds `HTTP_ADDR` and `ADMIN_ADDR`.
    ///
    /// # Errors
    /// When the database is unreachable, a migration fails or the address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = migration::connect_and_migrate(
            &settings.database_url,
            settings.database_max_connections,
        )
        .await?;
        Self::build_with_db(settings, db, outbox::Wakeup::default()).await
    }

    /// Like [`build`](Self::build) with an already connected, migrated database and an
    /// in-process outbox wake-up (the all-in-one runner passes its relay's).
    ///
    /// # Errors
    /// When an address cannot be bound.
    pub async fn build_with_db(
        settings: Settings,
        db: DatabaseConnection,
        outbox_wakeup: outbox::Wakeup,
    ) -> anyhow::Result<Self> {
        // Install the recorder before the first request records anything.
        common::telemetry::metrics();
        crate::metrics::register();
        crate::phone::describe_metrics();
        if settings.code_hmac_key.is_none() {
            tracing::warn!(
                "CODE_HMAC_KEY is not set: using a random key for this process, so codes stop \
                 working when it restarts and differ between instances (links keep working)"
            );
        }
        let hasher = PasswordHasher::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            settings.argon2_parallelism,
            settings.max_concurrent_hashes,
            settings.hash_queue_timeout,
        )?;
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding HTTP_ADDR {}", settings.http_addr))?;
        let admin = TcpListener::bind(settings.admin_addr)
            .await
            .with_context(|| format!("binding ADMIN_ADDR {}", settings.admin_addr))?;
        let (documented, openapi) = routes::documented_routes();
        let rate_limits = Arc::new(RateLimits::new(
            settings.rate_limit_register,
            settings.rate_limit_verify,
            settings.rate_limit_resend,
            settings.trust_forwarded_for,
        ));
        let state = AppState {
            db,
            rate_limits,
            settings: Arc::new(settings),
            hasher,
            outbox_wakeup,
            openapi: Arc::new(openapi),
            pages: Arc::new(pages::Templates::new()?),
        };
        let routes = documented.merge(pages::routes(state.clone()));
        let router = middleware::api(routes, state.clone());
        Ok(Self {
            listener,
            admin,
            router,
            state,
        })
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The bound admin address: health and `GET /metrics`.
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn admin_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.admin.local_addr()?)
    }

    /// The database connection (tests and the all-in-one runner share it).
    pub fn db(&self) -> &DatabaseConnection {
        &self.state.db
    }

    /// Serves the API and the admin port until `shutdown` is cancelled, then lets in-flight
    /// requests finish.
    ///
    /// # Errors
    /// When a server fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(
            addr = %self.local_addr()?,
            admin = %self.admin_addr()?,
            "user-service listening"
        );
        let limits = self.state.settings.http_limits();
        let scheduler = tokio::spawn(reminder::run_scheduler(
            self.state.db.clone(),
            self.state.settings.clone(),
            self.state.outbox_wakeup.clone(),
            shutdown.clone(),
        ));
        let sweeper = tokio::spawn(expiry::run_sweeper(
            self.state.db.clone(),
            self.state.settings.clone(),
            shutdown.clone(),
        ));
        let admin = tokio::spawn(common::http::serve(
            self.admin,
            admin::router(self.state.clone()),
            limits,
            shutdown.clone().cancelled_owned(),
        ));
        let served = common::http::serve(
            self.listener,
            self.router,
            limits,
            shutdown.clone().cancelled_owned(),
        )
        .await
        .context("HTTP server failed");
        // Stop the scheduler, the sweeper and the admin port too when the server ended on its
        // own (an error).
        shutdown.cancel();
        scheduler.await.context("reminder scheduler panicked")?;
        sweeper.await.context("pending-account sweeper panicked")?;
        admin
            .await
            .context("admin server panicked")?
            .context("admin server failed")?;
        served?;
        tracing::info!("user-service stopped");
        Ok(())
    }
}
