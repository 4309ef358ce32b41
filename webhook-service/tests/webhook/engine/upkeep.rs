//! Retention, metrics and shutdown.

use crate::helpers::TestService;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::{
    WAIT,
    rows::{self, Endpoint, NewRow, delivery, insert, insert_endpoint, insert_message},
};
use crate::helpers::{Receiver, Reply, eventually, test_settings};

#[tokio::test]
async fn retention_purges_finished_rows_and_keeps_pending_ones() {
    let settings = webhook_service::Settings {
        webhook_attempt_retention: Duration::from_secs(1),
        ..test_settings("engine_retention").await
    };
    let service = TestService::start(settings).await;
    let receiver = Receiver::start().await;
    let endpoint_id = insert_endpoint(&service.db, &Endpoint::new(receiver.url("/hook"))).await;

    let delivered_message = insert_message(&service.db, "{}").await;
    let delivered = insert(&service.db, NewRow::webhook(endpoint_id, delivered_message)).await;
    let waiting_message = insert_message(&service.db, "{}").await;
    let waiting = insert(
        &service.db,
        NewRow {
            execute_at: Utc::now() + chrono::Duration::hours(1),
            ..NewRow::webhook(endpoint_id, waiting_message)
        },
    )
    .await;
    receiver.wait_for(1, WAIT).await;

    eventually(WAIT, "finished rows purged", || async {
        let count = |sql: String| {
            let db = service.db.clone();
            async move { rows::count(&db, &sql).await }
        };
        count(format!(
            "SELECT COUNT(*) FROM deliveries WHERE id = '{delivered}'"
        ))
        .await
            == 0
            && count(format!(
                "SELECT COUNT(*) FROM attempts WHERE delivery_id = '{delivered}'"
            ))
            .await
                == 0
            && count(format!(
                "SELECT COUNT(*) FROM messages WHERE id = '{delivered_message}'"
            ))
            .await
                == 0
    })
    .await;
    assert_eq!(delivery(&service.db, waiting).await.status, "pending");
    assert_eq!(
        rows::count(
            &service.db,
            &format!("SELECT COUNT(*) FROM messages WHERE id = '{waiting_message}'")
        )
        .await,
        1,
        "a message with a pending delivery stays"
    );
}

#[tokio::test]
async fn engine_metrics_exist_from_the_start() {
    let _service = TestService::start(test_settings("engine_metrics").await).await;
    let rendered = eventually(WAIT, "engine metrics", || async {
        let rendered = common::telemetry::metrics().render();
        rendered.contains("webhook_due_backlog").then_some(rendered)
    })
    .await;
    for series in [
        "webhook_attempts_total{kind=\"job\",outcome=\"retry\"}",
        "webhook_attempts_total{kind=\"webhook\",outcome=\"failed\"}",
        "webhook_oldest_due_age_seconds",
        "webhook_endpoints_disabled_total{reason=\"gone\"}",
    ] {
        assert!(rendered.contains(series), "{series} missing:\n{rendered}");
    }
}

#[tokio::test]
async fn shutdown_lets_the_call_in_flight_finish_and_records_it() {
    let service = TestService::start(test_settings("engine_shutdown").await).await;
    let receiver = Receiver::start().await;
    receiver.reply([Reply::Hang]);
    let db = service.db.clone();
    let id = insert(
        &db,
        NewRow {
            timeout_ms: 1000,
            ..NewRow::job(receiver.url("/slow"))
        },
    )
    .await;
    receiver.wait_for(1, WAIT).await;

    let stopping = Instant::now();
    service.stop().await;
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
    let attempts = rows::attempts(&db, id).await;
    assert_eq!(attempts.len(), 1, "the call in flight was recorded");
    assert_eq!(attempts[0].error_kind.as_deref(), Some("timeout"));
    let row = delivery(&db, id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("pending", 1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.requests().len(),
        1,
        "nothing claimed after the stop"
    );
}
