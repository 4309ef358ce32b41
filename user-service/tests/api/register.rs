//! Registration: the user row and the outbox row commit together.

use std::time::Duration;

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, ann, spawn_app, spawn_sqlite_app};

async fn assert_one_user_and_one_event(app: &TestApp) {
    let response = app.register(&ann()).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "pending_verification");
    let user_id = body["user_id"].as_str().unwrap().to_owned();

    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.count("verifications").await, 1);
    let outbox = app.outbox().await;
    assert_eq!(outbox.len(), 1);
    let (event_type, routing_key, payload, headers) = &outbox[0];
    assert_eq!(event_type, "UserRegisteredV1");
    assert_eq!(routing_key, "user.registered.v1");
    assert_eq!(payload["event_type"], "UserRegisteredV1");
    assert_eq!(payload["event_version"], 1);
    assert_eq!(payload["data"]["user_id"], user_id.as_str());
    assert_eq!(
        payload["data"]["email"], "ann@example.com",
        "email is normalised"
    );
    assert_eq!(payload["data"]["first_name"], "Ann");
    let link = payload["data"]["verification"]["link"].as_str().unwrap();
    assert!(
        link.starts_with("http://127.0.0.1:8080/user/verify?token="),
        "{link}"
    );
    let code = payload["data"]["verification"]["code"].as_str().unwrap();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    assert!(headers["correlation_id"].is_string());
    assert!(headers["traceparent"].as_str().unwrap().starts_with("00-"));

    let everything = format!("{payload}{headers}");
    assert!(
        !everything.contains("correct horse battery"),
        "password leaked"
    );
    assert!(!everything.contains("argon2"), "password hash leaked");
    assert!(
        !everything.to_lowercase().contains("password"),
        "password field leaked"
    );
}

#[tokio::test]
async fn register_writes_one_user_and_one_outbox_row_on_postgres() {
    let app = spawn_app("register_pg").await;
    assert_one_user_and_one_event(&app).await;
    let hash = app
        .scalar("SELECT COUNT(*) AS n FROM users WHERE password_hash LIKE '$argon2id$%'")
        .await;
    assert_eq!(hash, 1, "stored as an argon2id PHC string");
}

#[tokio::test]
async fn register_writes_one_user_and_one_outbox_row_on_sqlite() {
    let app = spawn_sqlite_app().await;
    assert_one_user_and_one_event(&app).await;
}

#[tokio::test]
async fn verification_secrets_are_stored_only_as_hashes() {
    let app = spawn_app("secrets_hashed").await;
    assert_eq!(app.register(&ann()).await.status(), 201);
    let (_, _, payload, _) = app.outbox().await.remove(0);
    let link = payload["data"]["verification"]["link"].as_str().unwrap();
    let token = link.split("token=").nth(1).unwrap();
    let code = payload["data"]["verification"]["code"].as_str().unwrap();
    let leaked = app
        .scalar(&format!(
            "SELECT COUNT(*) AS n FROM verifications WHERE token_hash = '{token}' OR code_hash = '{code}'"
        ))
        .await;
    assert_eq!(leaked, 0);
}

#[tokio::test]
async fn register_returns_409_when_email_is_taken_ignoring_case_and_spaces() {
    for app in [spawn_app("dup").await, spawn_sqlite_app().await] {
        assert_eq!(app.register(&ann()).await.status(), 201);
        let again = app
            .register(&json!({"email": "  ANN@example.COM ", "password": "another password"}))
            .await;
        assert_eq!(again.status(), 409);
        let body: Value = again.json().await.unwrap();
        assert_eq!(body["error"]["code"], "email_taken");
        assert_eq!(app.count("users").await, 1);
        assert_eq!(app.events("UserRegisteredV1").await.len(), 1);
        // The one other row: the owner's notice of the attempt.
        assert_eq!(app.events("SignupAttemptedV1").await.len(), 1);
        assert_eq!(app.count("outbox").await, 2);
    }
}

#[tokio::test]
async fn register_wakes_the_relay_at_commit() {
    let app = spawn_app("register_notify").await;
    let wakeup = outbox::Wakeup::default();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(outbox::listen(app.db.clone(), wakeup.clone(), shutdown));
    let within = Duration::from_secs(10);
    // The listener signals once when its LISTEN is in place: from then on nothing is missed.
    tokio::time::timeout(within, wakeup.notified())
        .await
        .expect("LISTEN established");
    assert_eq!(app.register(&ann()).await.status(), 201);
    tokio::time::timeout(within, wakeup.notified())
        .await
        .expect("the registration's NOTIFY reaches the relay's LISTEN");
}

#[tokio::test]
async fn a_failing_outbox_insert_rolls_back_the_user() {
    let app = spawn_app("atomicity").await;
    // Sabotage: every outbox insert now violates a constraint.
    app.db
        .execute_unprepared("ALTER TABLE outbox ADD CONSTRAINT sabotage CHECK (false) NOT VALID")
        .await
        .unwrap();
    let response = app.register(&ann()).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": "internal_error", "message": "internal error"}}),
        "a 500 reveals nothing internal"
    );
    assert_eq!(app.count("users").await, 0);
    assert_eq!(app.count("verifications").await, 0);
    assert_eq!(app.count("outbox").await, 0);
}

#[tokio::test]
async fn fifty_concurrent_registrations_of_one_email_create_one_user() {
    let app = spawn_app("concurrent").await;
    let requests = (0..50).map(|i| {
        let app = &app;
        async move {
            app.register(&json!({"email": "race@example.com", "password": format!("password-{i}")}))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(requests).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        49,
        "{statuses:?}"
    );
    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.events("UserRegisteredV1").await.len(), 1);
    // 49 duplicates, one (rate-limited) notice to the owner.
    assert_eq!(app.events("SignupAttemptedV1").await.len(), 1);
    assert_eq!(app.count("outbox").await, 2);
}

#[tokio::test]
async fn health_endpoints_report_live_and_ready() {
    let app = spawn_app("health").await;
    for path in ["/health/live", "/health/ready"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let app = spawn_app("ready_db_gone").await;
    let name = app.database_url.rsplit('/').next().unwrap().to_owned();
    let admin = sea_orm::Database::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
    let response = app.get("/health/ready").await;
    assert_eq!(response.status(), 503);
    let live = app.get("/health/live").await;
    assert_eq!(live.status(), 200);
}

#[tokio::test]
async fn metrics_count_registrations() {
    let app = spawn_app("metrics").await;
    assert_eq!(app.register(&ann()).await.status(), 201);
    let text = app.admin_metrics().await;
    assert!(
        text.contains("user_registrations_total{outcome=\"created\"}"),
        "{text}"
    );
    assert!(text.contains("http_request_duration_seconds"), "{text}");
}
