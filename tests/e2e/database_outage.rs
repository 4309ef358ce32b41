//! The user-service while its database is unreachable: 503 with `Retry-After`, never 500, and
//! back to normal once the database answers again.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{helpers::eventually, proxy::Proxy};

#[tokio::test]
async fn register_answers_503_with_retry_after_while_the_database_is_unreachable() {
    common::testing::init_tracing();
    let direct = common::testing::fresh_postgres_database("e2e_db_outage")
        .await
        .unwrap();
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    // postgres://postgres@127.0.0.1:5432/<db> → the same database through the proxy.
    let through_proxy = direct.replace("127.0.0.1:5432", &proxy.addr().to_string());
    let app = user_service::Application::build(user_service::Settings {
        database_url: through_proxy.into(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        argon2_memory_kib: 1024,
        argon2_iterations: 1,
        argon2_allow_weak: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}/user/register", app.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(app.run(shutdown));
    let client = reqwest::Client::new();
    let register = |email: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(url)
                .json(&json!({"email": email, "password": "correct horse battery"}))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(register("before@example.com").await.status(), 201);

    proxy.cut();
    let response = register("during@example.com").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable");

    proxy.restore();
    eventually(Duration::from_secs(30), "the database back", || async {
        register("during@example.com").await.status() == 201
    })
    .await;
}
