//! Building and running the user-service: router, listener, shutdown.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use anyhow::Context;
use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, StatusCode},
    middleware::{self, Next},
    response::Response,
};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{
    expiry, migration,
    password::PasswordHasher,
    rate_limit::{self, RateLimits},
    reminder, routes,
    settings::Settings,
    state::AppState,
};

/// A built user-service, bound to its port, ready to [`run`](Application::run).
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Connects and migrates the database, then binds `HTTP_ADDR`.
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
    /// When the address cannot be bound.
    pub async fn build_with_db(
        settings: Settings,
        db: DatabaseConnection,
        outbox_wakeup: outbox::Wakeup,
    ) -> anyhow::Result<Self> {
        // Install the recorder before the first request records anything.
        common::telemetry::metrics();
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
        )?;
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding HTTP_ADDR {}", settings.http_addr))?;
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
        };
        let router = router(documented, state.clone());
        Ok(Self {
            listener,
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

    /// The database connection (tests and the all-in-one runner share it).
    pub fn db(&self) -> &DatabaseConnection {
        &self.state.db
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "user-service listening");
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
        // With the peer address: the rate limits are per client.
        let served = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("HTTP server failed");
        // Stop the scheduler and the sweeper too when the server ended on its own (an error).
        shutdown.cancel();
        scheduler.await.context("reminder scheduler panicked")?;
        sweeper.await.context("pending-account sweeper panicked")?;
        served?;
        tracing::info!("user-service stopped");
        Ok(())
    }
}

/// The routes with their middleware and state.
fn router(routes: Router<AppState>, state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let timeout = state.settings.request_timeout;
    let body_limit = state.settings.max_body_bytes;
    routes
        .layer(DefaultBodyLimit::max(body_limit))
        // Inside the metrics layer: a refused request is counted as a 429 like any other.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit,
        ))
        .layer(middleware::from_fn(record_metrics))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// `http_requests_total` and `http_request_duration_seconds` by route and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
