//! Readiness follows the broker: not ready while it is unreachable, ready again after, and the
//! pipeline delivers once it is back.

use std::time::Duration;

use serde_json::json;

use crate::{
    helpers::{eventually, spawn_stack_with},
    proxy::Proxy,
};

async fn status(client: &reqwest::Client, addr: std::net::SocketAddr) -> u16 {
    client
        .get(format!("http://{addr}/health/ready"))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test]
async fn readiness_reports_the_broker_and_recovers_after_it_returns() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = proxy.amqp_url();
    let stack = spawn_stack_with("e2e_readiness", |s| {
        s.relay.amqp_url = url.clone().into();
        s.email.amqp_url = url.into();
    })
    .await;
    let client = &stack.client;
    let admins = [stack.relay_admin, stack.email_admin];
    let wait = Duration::from_secs(30);

    // The relay connects on its first batch; a registration makes sure it has.
    let body = json!({"email": "first@example.com", "password": "long enough"});
    assert_eq!(stack.register(&body).await.status(), 201);
    stack.mails(1).await;
    for addr in admins {
        eventually(wait, "ready", || async move {
            status(client, addr).await == 200
        })
        .await;
    }

    proxy.cut();
    for addr in admins {
        eventually(wait, "not ready", || async move {
            status(client, addr).await == 503
        })
        .await;
    }
    // Registration still works while the broker is gone: the outbox keeps the event.
    let body = json!({"email": "during@example.com", "password": "long enough"});
    assert_eq!(stack.register(&body).await.status(), 201);
    let user_ready = client.get(stack.url("/health/ready")).send().await.unwrap();
    assert_eq!(
        user_ready.status(),
        200,
        "the user-service does not depend on the broker"
    );

    proxy.restore();
    for addr in admins {
        eventually(wait, "ready again", || async move {
            status(client, addr).await == 200
        })
        .await;
    }
    let mails = stack.mails(2).await;
    assert!(
        mails.iter().any(|m| m.to == ["during@example.com"]),
        "the held event went out"
    );
}
