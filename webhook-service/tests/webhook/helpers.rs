//! A running webhook-service on a fresh database and AMQP namespace, and [`Receiver`]: a local
//! HTTP server that records every request and answers from a script.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use common::topology::Topology;
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webhook_service::{Application, Settings};

pub(crate) use common::testing::eventually;

/// The API token of test services.
pub(crate) const TOKEN: &str = "test-token-0123456789abcdef";

/// Settings of a test service: fresh database, own namespace, port 0, loopback receivers
/// allowed, a short retry schedule.
pub(crate) async fn test_settings(label: &str) -> Settings {
    let database_url = common::testing::fresh_postgres_database(label)
        .await
        .expect("test database");
    Settings {
        amqp_url: common::testing::amqp_url().into(),
        amqp_namespace: common::testing::unique_namespace(),
        database_url: database_url.into(),
        http_addr: "127.0.0.1:0".parse().expect("address"),
        webhook_api_token: Some(webhook_service::ApiToken(TOKEN.into())),
        webhook_allowed_nets: vec!["127.0.0.0/8".parse().expect("net")],
        webhook_retry_schedule: vec![Duration::from_millis(100), Duration::from_millis(200)],
        webhook_request_timeout: Duration::from_secs(2),
        ..Settings::default()
    }
}

/// A running webhook-service.
pub(crate) struct TestService {
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    pub(crate) settings: Settings,
    pub(crate) db: DatabaseConnection,
    pub(crate) client: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    // Last field: dropped after the service was told to stop.
    _cleanup: common::testing::AmqpCleanup,
}

impl TestService {
    /// Builds and runs the service with `settings`.
    pub(crate) async fn start(settings: Settings) -> Self {
        common::testing::init_tracing();
        let cleanup = common::testing::AmqpCleanup::for_topology(&Topology::webhook_service(
            &settings.amqp_namespace,
        ));
        let app = Application::build(settings.clone())
            .await
            .expect("webhook-service builds");
        let base = format!("http://{}", app.http_addr().expect("bound"));
        let db = app.db().clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        Self {
            base,
            settings,
            db,
            client: reqwest::Client::new(),
            shutdown,
            task: Some(task),
            _cleanup: cleanup,
        }
    }

    /// A request to the API with the bearer token.
    pub(crate) fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    /// Stops the service and waits for it to finish.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("task").expect("clean stop");
        }
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What a [`Receiver`] answers to one request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// This status with these headers and an empty body.
    Status(u16, Vec<(&'static str, String)>),
    /// This status with a JSON body.
    Json(u16, String),
    /// Never answer (the caller's timeout must fire).
    Hang,
}

impl Reply {
    /// A bare status.
    pub(crate) fn status(status: u16) -> Self {
        Self::Status(status, Vec::new())
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) at: std::time::Instant,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Received {
    /// A header's value as text ("" when absent).
    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

#[derive(Default)]
struct Script {
    received: Vec<Received>,
    replies: VecDeque<Reply>,
}

/// A local HTTP receiver: records every request, answers the scripted replies in order, then
/// 200.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    _stop: Arc<tokio_util::sync::DropGuard>,
}

impl Receiver {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let script = Arc::new(Mutex::new(Script::default()));
        let stop = CancellationToken::new();
        let router = Router::new().fallback(record).with_state(script.clone());
        tokio::spawn({
            let stop = stop.clone();
            async move {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
            }
        });
        Self {
            addr,
            script,
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers these replies to the next requests, in order (then 200 again).
    pub(crate) fn reply(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().expect("script").replies.extend(replies);
    }

    /// Every request so far.
    pub(crate) fn requests(&self) -> Vec<Received> {
        self.script.lock().expect("script").received.clone()
    }

    /// Waits (bounded) until at least `n` requests arrived and returns them all.
    pub(crate) async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, &format!("{n} request(s) at the receiver"), || {
            let requests = self.requests();
            async move { (requests.len() >= n).then_some(requests) }
        })
        .await
    }
}

async fn record(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut script = script.lock().expect("script");
        script.received.push(Received {
            at: std::time::Instant::now(),
            method,
            uri,
            headers,
            body,
        });
        script.replies.pop_front()
    };
    match reply.unwrap_or(Reply::status(200)) {
        Reply::Status(status, headers) => {
            let mut response = StatusCode::from_u16(status)
                .expect("status")
                .into_response();
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(name, value.parse().expect("header value"));
            }
            response
        }
        Reply::Json(status, body) => (
            StatusCode::from_u16(status).expect("status"),
            [("content-type", "application/json")],
            body,
        )
            .into_response(),
        Reply::Hang => std::future::pending().await,
    }
}
