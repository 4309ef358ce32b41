//! Webhooks: signing, `410 Gone`, disabled and deleted endpoints, endpoint health.

use crate::helpers::TestService;
use std::time::Duration;

use chrono::Utc;
use webhook_service::signing::{self, Secret};

use super::{
    WAIT, assert_no_more_requests,
    rows::{self, Endpoint, NewRow, endpoint, insert, insert_endpoint, insert_message},
    wait_status,
};
use crate::helpers::{Receiver, Reply, test_settings};

#[tokio::test]
async fn gone_fails_at_once_and_disables_the_endpoint() {
    let service = TestService::start(test_settings("engine_gone").await).await;
    let receiver = Receiver::start().await;
    receiver.reply([Reply::status(410)]);
    let endpoint_id = insert_endpoint(&service.db, &Endpoint::new(receiver.url("/hook"))).await;
    // `endpoint.disabled` goes to an endpoint that lists it, not to a catch-all one.
    let watcher = Receiver::start().await;
    let watcher_id = insert_endpoint(&service.db, &Endpoint::new(watcher.url("/ops"))).await;
    rows::execute(
        &service.db,
        &format!(
            "UPDATE endpoints SET event_types = '[\"endpoint.disabled\"]' WHERE id = '{watcher_id}'"
        ),
    )
    .await;
    let catch_all = Receiver::start().await;
    insert_endpoint(&service.db, &Endpoint::new(catch_all.url("/all"))).await;

    let first = insert(
        &service.db,
        NewRow::webhook(endpoint_id, insert_message(&service.db, "{}").await),
    )
    .await;
    let row = wait_status(&service.db, first, "failed").await;
    assert_eq!((row.attempts, row.last_status), (1, Some(410)));
    assert_eq!(row.last_error.as_deref(), Some("gone"));
    let state = endpoint(&service.db, endpoint_id).await;
    assert!(!state.enabled);
    assert_eq!(state.disabled_reason.as_deref(), Some("gone"));
    let announced = watcher.wait_for(1, WAIT).await;
    let event = announced[0].json();
    assert_eq!(event["type"], "endpoint.disabled");
    assert_eq!(event["data"]["endpoint_id"], endpoint_id.to_string());
    assert_eq!(event["data"]["reason"], "gone");
    assert_eq!(
        event["data"]["url"],
        format!("http://{}", receiver.addr),
        "the origin only: a path may hold a secret"
    );
    assert_no_more_requests(&catch_all, 0, Duration::from_millis(200)).await;

    // A disabled endpoint gets no call: its deliveries fail, recoverable later.
    let second = insert(
        &service.db,
        NewRow::webhook(endpoint_id, insert_message(&service.db, "{}").await),
    )
    .await;
    let row = wait_status(&service.db, second, "failed").await;
    assert_eq!(row.attempts, 0);
    assert_eq!(row.last_error.as_deref(), Some("endpoint_disabled"));

    // A deleted endpoint's deliveries are cancelled.
    rows::execute(&service.db, "DELETE FROM endpoints").await;
    let third = insert(
        &service.db,
        NewRow::webhook(endpoint_id, insert_message(&service.db, "{}").await),
    )
    .await;
    wait_status(&service.db, third, "cancelled").await;
    assert_no_more_requests(&receiver, 1, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn webhooks_are_signed_with_one_id_across_retries_and_both_secrets_in_a_rotation() {
    let service = TestService::start(test_settings("engine_signing").await).await;
    let receiver = Receiver::start().await;
    receiver.reply([Reply::status(500)]);
    let (current, previous) = (Secret::generate(), Secret::generate());
    let endpoint_id = insert_endpoint(
        &service.db,
        &Endpoint {
            headers: serde_json::json!({"x-custom": "custom-value", "webhook-id": "forged"}),
            previous_secret: Some((previous.to_text(), Utc::now() + chrono::Duration::hours(1))),
            ..Endpoint::with_secret(receiver.url("/hook?token=s3cret"), &current)
        },
    )
    .await;
    let payload = r#"{"type":"user.registered","data":{"user_id":"u1"}}"#;
    let message_id = insert_message(&service.db, payload).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let id = insert(
        &service.db,
        NewRow {
            traceparent: Some(parent.into()),
            ..NewRow::webhook(endpoint_id, message_id)
        },
    )
    .await;

    let requests = receiver.wait_for(2, WAIT).await;
    let now = Utc::now().timestamp();
    for request in &requests {
        assert_eq!(
            request.header("webhook-id"),
            format!("msg_{}", message_id.simple())
        );
        assert_eq!(request.body.as_ref(), payload.as_bytes());
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("x-custom"), "custom-value");
        assert_eq!(request.headers.get_all("webhook-id").iter().count(), 1);
        assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
        for secret in [&current, &previous] {
            signing::verify(
                &[secret],
                &request.headers,
                &request.body,
                now,
                signing::DEFAULT_TOLERANCE,
            )
            .expect("each secret of the rotation verifies");
        }
        let traceparent = request.header("traceparent");
        assert_eq!(&traceparent[..36], &parent[..36], "same trace");
        assert_ne!(&traceparent[36..52], &parent[36..52], "new span");
    }
    wait_status(&service.db, id, "succeeded").await;
    let attempts = rows::attempts(&service.db, id).await;
    assert!(
        attempts[0].url.ends_with("/hook?token=***"),
        "{}",
        attempts[0].url
    );

    // After the grace period only the current secret signs.
    rows::execute(
        &service.db,
        "UPDATE endpoints SET previous_secret_until = now() - interval '1 second'",
    )
    .await;
    insert(
        &service.db,
        NewRow::webhook(endpoint_id, insert_message(&service.db, payload).await),
    )
    .await;
    let requests = receiver.wait_for(3, WAIT).await;
    let signature = requests[2].header("webhook-signature");
    assert_eq!(signature.split(' ').count(), 1, "{signature}");
    let now = Utc::now().timestamp();
    let verify = |secret: &Secret| {
        signing::verify(
            &[secret],
            &requests[2].headers,
            &requests[2].body,
            now,
            signing::DEFAULT_TOLERANCE,
        )
    };
    verify(&current).expect("the current secret signs");
    verify(&previous).expect_err("the previous one no longer does");
}

#[tokio::test]
async fn an_endpoint_failing_for_disable_after_is_disabled_and_a_success_clears_the_run() {
    let settings = webhook_service::Settings {
        webhook_disable_after: Duration::from_secs(1),
        ..test_settings("engine_disable").await
    };
    let service = TestService::start(settings).await;
    let failing = Receiver::start().await;
    failing.reply(std::iter::repeat_n(Reply::status(500), 1000));
    let recovering = Receiver::start().await;
    recovering.reply([Reply::status(500)]);
    let failing_endpoint = insert_endpoint(&service.db, &Endpoint::new(failing.url("/a"))).await;
    let recovering_endpoint =
        insert_endpoint(&service.db, &Endpoint::new(recovering.url("/b"))).await;

    let id = insert(
        &service.db,
        NewRow {
            retry_schedule: Some(vec![200; 30]),
            ..NewRow::webhook(failing_endpoint, insert_message(&service.db, "{}").await)
        },
    )
    .await;
    let recovered = insert(
        &service.db,
        NewRow::webhook(recovering_endpoint, insert_message(&service.db, "{}").await),
    )
    .await;

    let row = wait_status(&service.db, id, "failed").await;
    assert_eq!(row.last_error.as_deref(), Some("endpoint_disabled"));
    let state = endpoint(&service.db, failing_endpoint).await;
    assert!(!state.enabled);
    assert_eq!(state.disabled_reason.as_deref(), Some("failing"));
    let calls = failing.requests().len();
    assert!((5..=10).contains(&calls), "{calls} calls in about 1 s");
    let rendered = common::telemetry::metrics().render();
    assert!(
        rendered.contains("webhook_endpoints_disabled_total{reason=\"failing\"}"),
        "{rendered}"
    );

    wait_status(&service.db, recovered, "succeeded").await;
    let state = endpoint(&service.db, recovering_endpoint).await;
    assert!(state.enabled);
    assert_eq!(state.failing_since, None, "a success ends the failure run");
}
