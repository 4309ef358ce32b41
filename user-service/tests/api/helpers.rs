//! `spawn_app`: a user-service on a random port with its own fresh database.

use std::{net::SocketAddr, time::Duration};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use user_service::{Application, RateLimit, Settings};

pub(crate) struct TestApp {
    pub(crate) addr: SocketAddr,
    /// The admin port: health and `/metrics`.
    pub(crate) admin: SocketAddr,
    pub(crate) db: DatabaseConnection,
    pub(crate) database_url: String,
    pub(crate) settings: Settings,
    pub(crate) client: reqwest::Client,
    shutdown: CancellationToken,
    // Keeps a SQLite file alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Settings for tests: random port, cheap argon2 (the policy, not the cost, is under test).
pub(crate) fn test_settings(database_url: String) -> Settings {
    Settings {
        database_url: database_url.into(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        argon2_memory_kib: 1024,
        argon2_iterations: 1,
        argon2_allow_weak: true,
        // Answering at once: the response-time floor has its own test.
        min_response_time: Duration::ZERO,
        // Tests send bursts from one address; the limits have their own tests.
        rate_limit_register: RateLimit::OFF,
        rate_limit_verify: RateLimit::OFF,
        rate_limit_resend: RateLimit::OFF,
        ..Settings::default()
    }
}

pub(crate) async fn spawn_app(label: &str) -> TestApp {
    let url = common::testing::fresh_postgres_database(label)
        .await
        .unwrap();
    spawn_with(test_settings(url), None).await
}

/// [`spawn_app`] with some settings changed.
pub(crate) async fn spawn_tuned(label: &str, tune: impl FnOnce(&mut Settings)) -> TestApp {
    let url = common::testing::fresh_postgres_database(label)
        .await
        .unwrap();
    let mut settings = test_settings(url);
    tune(&mut settings);
    spawn_with(settings, None).await
}

pub(crate) async fn spawn_sqlite_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/users.db?mode=rwc", dir.path().display());
    spawn_with(test_settings(url), Some(dir)).await
}

pub(crate) async fn spawn_with(settings: Settings, dir: Option<tempfile::TempDir>) -> TestApp {
    common::testing::init_tracing();
    let database_url = settings.database_url.expose().to_owned();
    let kept = settings.clone();
    let app = Application::build(settings).await.unwrap();
    let addr = app.local_addr().unwrap();
    let admin = app.admin_addr().unwrap();
    let db = app.db().clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    TestApp {
        addr,
        admin,
        db,
        database_url,
        settings: kept,
        client: reqwest::Client::new(),
        shutdown,
        _dir: dir,
    }
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) async fn register(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/user/register"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn register_with_key(&self, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/user/register"))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn count(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .await
    }

    pub(crate) async fn scalar(&self, sql: &str) -> i64 {
        common::testing::scalar(&self.db, sql).await
    }

    /// The outbox rows as (event_type, routing_key, payload, headers), in sequence order.
    pub(crate) async fn outbox(&self) -> Vec<(String, String, Value, Value)> {
        let backend = self.db.get_database_backend();
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT event_type, routing_key, payload, headers FROM outbox ORDER BY seq",
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|row| {
                let json = |col: &str| -> Value {
                    match backend {
                        DbBackend::Postgres => row.try_get::<Value>("", col).unwrap(),
                        _ => {
                            serde_json::from_str(&row.try_get::<String>("", col).unwrap()).unwrap()
                        }
                    }
                };
                (
                    row.try_get("", "event_type").unwrap(),
                    row.try_get("", "routing_key").unwrap(),
                    json("payload"),
                    json("headers"),
                )
            })
            .collect()
    }
}

impl TestApp {
    /// The Prometheus text of the admin port's `GET /metrics`.
    pub(crate) async fn admin_metrics(&self) -> String {
        let (status, body) =
            common::testing::http_get(&format!("http://{}/metrics", self.admin)).await;
        assert_eq!(status, 200, "admin /metrics: {body}");
        body
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// `POST /user/verify` with a link token: status and JSON body.
    pub(crate) async fn verify_token(&self, token: &str) -> (u16, Value) {
        json_of(
            self.post_json("/user/verify", &json!({ "token": token }))
                .await,
        )
        .await
    }

    /// `POST /user/verify` with an email and a code: status and JSON body.
    pub(crate) async fn verify_code(&self, email: &str, code: &str) -> (u16, Value) {
        let body = json!({ "email": email, "code": code });
        json_of(self.post_json("/user/verify", &body).await).await
    }

    /// `POST /user/verification/resend`.
    pub(crate) async fn resend(&self, email: &str) -> reqwest::Response {
        self.post_json("/user/verification/resend", &json!({ "email": email }))
            .await
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Payloads of the outbox events of one type, oldest first.
    pub(crate) async fn events(&self, event_type: &str) -> Vec<Value> {
        self.outbox()
            .await
            .into_iter()
            .filter(|(t, ..)| t == event_type)
            .map(|(_, _, payload, _)| payload)
            .collect()
    }

    /// (token, code) of the newest verification event.
    pub(crate) async fn latest_secrets(&self) -> (String, String) {
        let payload = self
            .outbox()
            .await
            .into_iter()
            .rev()
            .find_map(|(.., payload, _)| {
                payload["data"]["verification"]
                    .is_object()
                    .then_some(payload)
            })
            .expect("a verification event");
        let verification = &payload["data"]["verification"];
        let token = verification["link"]
            .as_str()
            .unwrap()
            .split("token=")
            .nth(1)
            .unwrap();
        (
            token.to_owned(),
            verification["code"].as_str().unwrap().to_owned(),
        )
    }
}

/// Status and JSON body of a response.
pub(crate) async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

pub(crate) fn ann() -> Value {
    json!({
        "email": "Ann@Example.com",
        "password": "correct horse battery",
        "first_name": "Ann",
        "last_name": "Lee",
    })
}
