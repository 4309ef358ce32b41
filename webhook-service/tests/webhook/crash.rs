//! SIGKILL of the webhook-service binary in the middle of a delivery: a second process on the
//! same database sends it again after the lease, with the same `webhook-id`, and nothing is
//! lost.

use std::{process::Stdio, time::Duration};

use common::topology::Topology;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::{
    api::send,
    consumer::Publisher,
    helpers::{Receiver, Reply, TOKEN, eventually},
};

/// Starts the service binary on `database_url` and waits until it is ready.
async fn spawn(database_url: &str, namespace: &str) -> (Child, String) {
    let port = common::testing::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_webhook-service"))
        .env("DATABASE_URL", database_url)
        .env("AMQP_URL", common::testing::amqp_url())
        .env("AMQP_NAMESPACE", namespace)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("WEBHOOK_API_TOKEN", TOKEN)
        .env("WEBHOOK_ALLOWED_NETS", "127.0.0.0/8")
        .env("WEBHOOK_REQUEST_TIMEOUT", "1s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the webhook-service binary starts");
    eventually(Duration::from_secs(30), "the service ready", || {
        let url = format!("{base}/health/ready");
        async move { common::testing::http_get(&url).await.0 == 200 }
    })
    .await;
    (child, base)
}

#[tokio::test]
async fn a_delivery_in_flight_at_sigkill_is_sent_again_by_the_next_process_with_the_same_id() {
    common::testing::init_tracing();
    let database_url = common::testing::fresh_postgres_database("webhook_crash")
        .await
        .expect("database");
    let namespace = common::testing::unique_namespace();
    let _cleanup =
        common::testing::AmqpCleanup::for_topology(&Topology::webhook_service(&namespace));
    let receiver = Receiver::start().await;
    receiver.reply([Reply::Hang]);

    let (mut first, base) = spawn(&database_url, &namespace).await;
    let client = reqwest::Client::new();
    let (status, endpoint) = send(
        client
            .request(Method::POST, format!("{base}/v1/endpoints"))
            .bearer_auth(TOKEN)
            .json(&json!({"url": receiver.url("/hook"), "event_types": ["user.registered"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let publisher = Publisher::for_namespace(&common::testing::amqp_url(), &namespace).await;
    assert!(
        publisher
            .publish(&common::testing::user_registered("t0ken", "123456"))
            .await
    );

    // The first attempt hangs at the receiver: kill the process mid-delivery.
    let in_flight = receiver.wait_for(1, Duration::from_secs(20)).await;
    first.kill().await.expect("SIGKILL");

    let (_second, _) = spawn(&database_url, &namespace).await;
    // The lease (1 s timeout + 10 s margin) ends; the new process sends it again.
    let again = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(
        again[1].header("webhook-id"),
        in_flight[0].header("webhook-id"),
        "the duplicate carries the same webhook-id"
    );
    assert_eq!(again[1].json()["type"], "user.registered");
    let db = sea_orm::Database::connect(database_url.as_str())
        .await
        .expect("database");
    eventually(Duration::from_secs(10), "the delivery recorded", || async {
        common::testing::scalar(
            &db,
            "SELECT count(*) FROM deliveries WHERE status = 'succeeded'",
        )
        .await
            == 1
    })
    .await;
    assert_eq!(
        common::testing::scalar(&db, "SELECT count(*) FROM messages").await,
        1,
        "the event was stored once"
    );
    assert_eq!(receiver.requests().len(), 2, "one duplicate, no more");
}
