//! Per-client rate limits: the request past the limit gets 429 `rate_limited` with
//! `Retry-After`, whatever `X-Forwarded-For` says unless the proxy is trusted.

use std::time::Duration;

use serde_json::{Value, json};
use user_service::RateLimit;

use crate::helpers::{spawn_with, test_settings};

async fn verify_from(app: &crate::helpers::TestApp, forwarded_for: &str) -> reqwest::Response {
    app.client
        .post(app.url("/user/verify"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"token": "not-a-token"}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_request_past_the_verify_limit_gets_429_with_retry_after() {
    let url = common::testing::fresh_postgres_database("rate_limit")
        .await
        .unwrap();
    let app = spawn_with(
        user_service::Settings {
            rate_limit_verify: RateLimit::per(5, Duration::from_secs(60)),
            ..test_settings(url)
        },
        None,
    )
    .await;
    for n in 0..5 {
        // A client cannot reset its budget by naming another address.
        let response = verify_from(&app, &format!("198.51.100.{n}")).await;
        assert_eq!(response.status(), 404, "request {n} is within the limit");
    }
    let refused = verify_from(&app, "198.51.100.99").await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // The link page counts against the same budget; other endpoints have their own.
    assert_eq!(app.get("/user/verify?token=x").await.status(), 429);
    assert_eq!(app.resend("ann@example.com").await.status(), 202);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let url = common::testing::fresh_postgres_database("rate_limit_proxy")
        .await
        .unwrap();
    let app = spawn_with(
        user_service::Settings {
            rate_limit_verify: RateLimit::per(2, Duration::from_secs(60)),
            trust_forwarded_for: true,
            ..test_settings(url)
        },
        None,
    )
    .await;
    // The proxy appends the client it saw: the last entry counts, not what the client sent.
    for _ in 0..2 {
        assert_eq!(
            verify_from(&app, "1.2.3.4, 198.51.100.1").await.status(),
            404
        );
    }
    assert_eq!(
        verify_from(&app, "5.6.7.8, 198.51.100.1").await.status(),
        429
    );
    assert_eq!(verify_from(&app, "198.51.100.2").await.status(), 404);
}
