//! `Idempotency-Key`: replay returns the stored response without a second user or event.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{ann, spawn_app, spawn_tuned};

#[tokio::test]
async fn the_same_key_and_body_replays_the_stored_response() {
    let app = spawn_app("idem_replay").await;
    let first = app.register_with_key("key-1", &ann()).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();

    let second = app.register_with_key("key-1", &ann()).await;
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.count("outbox").await, 1);

    // Without the key the same body is a duplicate registration.
    assert_eq!(app.register(&ann()).await.status(), 409);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_user() {
    let app = spawn_app("idem_concurrent").await;
    let requests = (0..10).map(|_| {
        let app = &app;
        async move {
            let response = app.register_with_key("same-key", &ann()).await;
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    });
    let results = futures::future::join_all(requests).await;
    let user_ids: std::collections::HashSet<String> = results
        .iter()
        .map(|(_, body)| body["user_id"].to_string())
        .collect();
    assert!(
        results.iter().all(|(status, _)| *status == 201),
        "{results:?}"
    );
    assert_eq!(user_ids.len(), 1, "{results:?}");
    assert_eq!(app.count("outbox").await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_rejected() {
    let app = spawn_app("idem_misuse").await;
    assert_eq!(app.register_with_key("key-2", &ann()).await.status(), 201);
    let mut other_password = ann();
    other_password["password"] = json!("a different password");
    let mut other_name = ann();
    other_name["first_name"] = json!("Annie");
    for body in [other_password, other_name] {
        let response = app.register_with_key("key-2", &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "idempotency_key_reused");
    }
    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.count("outbox").await, 1);
}

#[tokio::test]
async fn keys_are_scoped_to_the_address_and_expired_ones_are_purged() {
    let app = spawn_tuned("idem_scope", |s| {
        s.idempotency_ttl = Duration::from_millis(500);
    })
    .await;
    assert_eq!(
        app.register_with_key("shared-key", &ann()).await.status(),
        201
    );
    // Another address with the same key is another request, not a reuse (and learns nothing
    // about the first).
    let bob = json!({"email": "bob@example.com", "password": "correct horse battery"});
    let response = app.register_with_key("shared-key", &bob).await;
    assert_eq!(response.status(), 201);
    assert!(response.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.count("users").await, 2);
    assert_eq!(app.count("idempotency_keys").await, 2);
    // The client's key is not stored as such.
    assert_eq!(
        app.scalar("SELECT COUNT(*) AS n FROM idempotency_keys WHERE key = 'shared-key'")
            .await,
        0
    );

    // Once they expired, storing another key deletes them.
    common::testing::eventually(Duration::from_secs(5), "the keys to expire", || async {
        app.scalar("SELECT COUNT(*) AS n FROM idempotency_keys WHERE expires_at > now()")
            .await
            == 0
    })
    .await;
    let carl = json!({"email": "carl@example.com", "password": "correct horse battery"});
    assert_eq!(app.register_with_key("carl-key", &carl).await.status(), 201);
    assert_eq!(app.count("idempotency_keys").await, 1);
}

#[tokio::test]
async fn an_invalid_key_is_a_400() {
    let app = spawn_app("idem_invalid").await;
    for key in ["", &"k".repeat(256), "has space"] {
        let response = app.register_with_key(key, &ann()).await;
        assert_eq!(response.status(), 400, "{key:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_header");
    }
    assert_eq!(app.count("users").await, 0);
}
