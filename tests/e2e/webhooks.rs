//! Webhooks end to end: a sign-up through the user-service API becomes, via the outbox, the
//! relay and the webhook-service's queue, a public `user.registered` message and a delivery to
//! the endpoint subscribed to it (and, once the delivery engine sends it, a signed POST to the
//! receiver), with the user's email and never the verification token or code.
//!
//! Endpoints are inserted into the webhook-service's database directly (the management API is
//! built separately).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap};
use sea_orm::{ConnectionTrait, Statement, Value};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestStack, code_in, eventually, link_in, spawn_stack, token_of};

const WAIT: Duration = Duration::from_secs(30);
/// The Standard Webhooks reference test secret.
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Subscribes `url` to `event_types`; returns the endpoint id.
async fn subscribe(stack: &TestStack, url: &str, event_types: &[&str]) -> Uuid {
    let id = Uuid::new_v4();
    let now = chrono::Utc::now();
    let db = &stack.webhook_db;
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO endpoints (id, url, description, event_types, headers, secret, enabled, \
         created_at, updated_at) VALUES ($1, $2, '', $3, $4, $5, true, $6, $7)",
        [
            id.into(),
            url.into(),
            json!(event_types).into(),
            json!({}).into(),
            SECRET.into(),
            now.into(),
            now.into(),
        ],
    ))
    .await
    .unwrap();
    id
}

/// `(event_type, payload)` of every public message.
async fn messages(stack: &TestStack) -> Vec<(String, serde_json::Value)> {
    let db = &stack.webhook_db;
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT event_type, payload FROM messages ORDER BY created_at",
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| {
        let payload: String = row.try_get("", "payload").unwrap();
        (
            row.try_get("", "event_type").unwrap(),
            serde_json::from_str(&payload).unwrap(),
        )
    })
    .collect()
}

/// Deliveries of the webhook-service to endpoint `id`.
async fn deliveries_to(stack: &TestStack, id: Uuid) -> i64 {
    let db = &stack.webhook_db;
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM deliveries WHERE endpoint_id = $1 AND kind = 'webhook'",
            [Value::from(id)],
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

/// The token and the code of the stack's first (verification) mail.
async fn secrets_of_first_mail(stack: &TestStack) -> (String, String) {
    let mail = stack.mails(1).await.remove(0);
    (token_of(&link_in(&mail)), code_in(&mail))
}

fn assert_no_secret(text: &str, token: &str, code: &str) {
    assert!(!text.contains(token), "token in {text}");
    assert!(!text.contains(code), "code in {text}");
    assert!(!text.contains("verify?token"), "link in {text}");
}

#[tokio::test]
async fn a_sign_up_is_stored_as_a_user_registered_webhook_for_its_subscribers_only() {
    let stack = spawn_stack("e2e_webhooks_fanout").await;
    let subscriber = subscribe(
        &stack,
        "http://127.0.0.1:9/hooks",
        &["user.registered", "user.verified"],
    )
    .await;
    let other = subscribe(
        &stack,
        "http://127.0.0.1:9/resends",
        &["user.verification_resent"],
    )
    .await;

    let body = json!({"email": "hook@example.com", "password": "long enough", "first_name": "Hu"});
    assert_eq!(stack.register(&body).await.status(), 201);
    let (token, code) = secrets_of_first_mail(&stack).await;
    eventually(WAIT, "the delivery to the subscriber", || async {
        deliveries_to(&stack, subscriber).await == 1
    })
    .await;
    assert_eq!(deliveries_to(&stack, other).await, 0);

    let messages = messages(&stack).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (event_type, payload) = &messages[0];
    assert_eq!(event_type, "user.registered");
    assert_eq!(payload["type"], "user.registered");
    assert_eq!(payload["data"]["email"], "hook@example.com");
    assert_eq!(payload["data"]["first_name"], "Hu");
    assert_no_secret(&payload.to_string(), &token, &code);
}

/// What a receiver got: headers and body of each request.
pub(crate) type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A local HTTP receiver answering 200 to everything; returns its base URL.
pub(crate) async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let router = Router::new()
        .fallback(
            |State(received): State<Received>, headers: HeaderMap, body: Bytes| async move {
                received.lock().unwrap().push((headers, body));
            },
        )
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, received)
}

/// The bodies of the received webhooks of type `event_type`, once there is one.
pub(crate) async fn webhooks_of(
    received: &Received,
    event_type: &str,
) -> Vec<(HeaderMap, serde_json::Value)> {
    eventually(WAIT, &format!("a {event_type} webhook"), || {
        let found: Vec<(HeaderMap, serde_json::Value)> = received
            .lock()
            .unwrap()
            .iter()
            .map(|(headers, body)| (headers.clone(), serde_json::from_slice(body).unwrap()))
            .filter(|(_, body): &(HeaderMap, serde_json::Value)| body["type"] == event_type)
            .collect();
        async move { (!found.is_empty()).then_some(found) }
    })
    .await
}

#[tokio::test]
async fn the_subscriber_receives_signed_user_registered_and_user_verified_webhooks() {
    let stack = spawn_stack("e2e_webhooks_receiver").await;
    let (base, received) = receiver().await;
    subscribe(
        &stack,
        &format!("{base}/hooks"),
        &["user.registered", "user.verified"],
    )
    .await;

    let body = json!({"email": "hook@example.com", "password": "long enough"});
    assert_eq!(stack.register(&body).await.status(), 201);
    let (token, code) = secrets_of_first_mail(&stack).await;
    let registered = webhooks_of(&received, "user.registered").await;
    assert_eq!(registered.len(), 1, "one webhook per event");
    let (headers, payload) = &registered[0];
    assert_eq!(payload["data"]["email"], "hook@example.com");
    assert_no_secret(&payload.to_string(), &token, &code);
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    assert!(header("webhook-id").starts_with("msg_"), "{headers:?}");
    assert!(
        header("webhook-signature").starts_with("v1,"),
        "{headers:?}"
    );
    assert!(
        header("webhook-timestamp").parse::<i64>().is_ok(),
        "{headers:?}"
    );

    assert_eq!(
        stack.verify_code("hook@example.com", &code).await.status(),
        200
    );
    let verified = webhooks_of(&received, "user.verified").await;
    assert_eq!(verified[0].1["data"]["email"], "hook@example.com");
}
