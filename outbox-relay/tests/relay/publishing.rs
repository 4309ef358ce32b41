//! One relay, driven deterministically with `relay_once`: properties, confirm-before-mark,
//! nacks, returns, a missing exchange, retention.

use std::time::Duration;

use chrono::Utc;
use lapin::{
    options::{QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use outbox_relay::Application;
use sea_orm::{ConnectionTrait, Statement};
use uuid::Uuid;

use crate::helpers::{TestContext, collect, message_id};

/// `(published_at IS NOT NULL, attempts, last_error)` of every row, in sequence order.
async fn row_states(ctx: &TestContext) -> Vec<(bool, i32, Option<String>)> {
    ctx.db
        .query_all_raw(Statement::from_string(
            ctx.db.get_database_backend(),
            "SELECT published_at IS NOT NULL AS published, attempts, last_error FROM outbox ORDER BY seq",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (
                row.try_get("", "published").unwrap(),
                row.try_get("", "attempts").unwrap(),
                row.try_get("", "last_error").unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn rows_arrive_with_their_properties_and_are_marked_after_the_confirm() {
    let ctx = TestContext::new("properties").await;
    let mut consumer = ctx.bind_test_queue().await;
    let app = Application::build(ctx.settings()).await.unwrap();
    let aggregates: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let ids = ctx.write_events(&aggregates).await;
    assert_eq!(ctx.published_count().await, (0, 5));

    let before = Utc::now();
    let report = app.relay().relay_once().await.unwrap();
    assert_eq!((report.claimed, report.published, report.failed), (5, 5, 0));
    assert_eq!(ctx.published_count().await, (5, 5));
    assert_eq!(app.relay().relay_once().await.unwrap().claimed, 0);

    let deliveries = collect(&mut consumer, 5, Duration::from_secs(10)).await;
    assert_eq!(deliveries.len(), 5);
    let rows = ctx
        .db
        .query_all_raw(Statement::from_string(
            ctx.db.get_database_backend(),
            "SELECT id, headers::text AS headers, created_at, published_at FROM outbox ORDER BY seq",
        ))
        .await
        .unwrap();
    for (delivery, row) in deliveries.iter().zip(&rows) {
        let id: Uuid = row.try_get("", "id").unwrap();
        assert_eq!(message_id(delivery), id);
        let p = &delivery.properties;
        assert_eq!(p.kind().as_ref().unwrap().as_str(), "UserVerifiedV1");
        assert_eq!(
            p.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        let created: chrono::DateTime<Utc> = row.try_get("", "created_at").unwrap();
        assert_eq!(*p.timestamp(), Some(created.timestamp() as u64));
        let published: chrono::DateTime<Utc> = row.try_get("", "published_at").unwrap();
        assert!(published >= before);
        let headers: serde_json::Value =
            serde_json::from_str(&row.try_get::<String>("", "headers").unwrap()).unwrap();
        let amqp_headers = p.headers().as_ref().unwrap().inner();
        for key in ["correlation_id", "traceparent"] {
            assert_eq!(
                amqp_headers.get(key),
                Some(&AMQPValue::LongString(
                    headers[key].as_str().unwrap().into()
                ))
            );
        }
        let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
        assert_eq!(body["event_id"], id.to_string());
        assert_eq!(delivery.routing_key.as_str(), "user.verified.v1");
    }
    assert_eq!(deliveries.iter().map(message_id).collect::<Vec<_>>(), ids);
}

#[tokio::test]
async fn a_nacked_publish_leaves_the_rows_pending() {
    let ctx = TestContext::new("nack").await;
    // A bound queue that refuses every message: the broker nacks each publish.
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let full = format!("{}full", ctx.namespace);
    ctx.track_queue(&full);
    ctx.channel
        .queue_declare(full.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    ctx.channel
        .queue_bind(
            full.as_str().into(),
            ctx.topology.exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let app = Application::build(ctx.settings()).await.unwrap();
    ctx.write_events(&[Uuid::new_v4(), Uuid::new_v4()]).await;

    let report = app.relay().relay_once().await.unwrap();
    assert_eq!((report.claimed, report.published, report.failed), (2, 0, 2));
    for (published, attempts, error) in row_states(&ctx).await {
        assert!(!published);
        assert_eq!(attempts, 1);
        assert!(error.unwrap().contains("nack"));
    }

    ctx.channel
        .queue_unbind(
            full.as_str().into(),
            ctx.topology.exchange.as_str().into(),
            "#".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let report = app.relay().relay_once().await.unwrap();
    assert_eq!((report.published, report.failed), (2, 0));
}

#[tokio::test]
async fn an_unroutable_publish_leaves_the_rows_pending() {
    let ctx = TestContext::new("unroutable").await;
    let app = Application::build(ctx.settings()).await.unwrap();
    // Connects and declares the topology; then remove the only route for user.verified.v1.
    assert_eq!(app.relay().relay_once().await.unwrap().claimed, 0);
    ctx.channel
        .queue_unbind(
            ctx.topology.email_queue.as_str().into(),
            ctx.topology.exchange.as_str().into(),
            "user.verified.v1".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    ctx.write_events(&[Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()])
        .await;

    let report = app.relay().relay_once().await.unwrap();
    assert_eq!((report.claimed, report.published, report.failed), (3, 0, 3));
    for (published, attempts, error) in row_states(&ctx).await {
        assert!(!published);
        assert_eq!(attempts, 1);
        assert!(error.unwrap().contains("unroutable"));
    }

    let mut consumer = ctx.bind_test_queue().await;
    let report = app.relay().relay_once().await.unwrap();
    assert_eq!((report.published, report.failed), (3, 0));
    collect(&mut consumer, 3, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_missing_exchange_leaves_the_rows_pending_and_is_redeclared() {
    let ctx = TestContext::new("noexchange").await;
    let app = Application::build(ctx.settings()).await.unwrap();
    assert_eq!(app.relay().relay_once().await.unwrap().claimed, 0);
    ctx.channel
        .exchange_delete(
            ctx.topology.exchange.as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
    ctx.write_events(&[Uuid::new_v4(), Uuid::new_v4()]).await;

    let report = app.relay().relay_once().await.unwrap();
    assert_eq!((report.claimed, report.published, report.failed), (2, 0, 2));
    for (published, attempts, error) in row_states(&ctx).await {
        assert!(!published);
        assert_eq!(attempts, 1);
        assert!(error.is_some());
    }
    // The broken channel makes the relay declare the topology again: the next batch succeeds.
    let report = app.relay().relay_once().await.unwrap();
    assert_eq!((report.published, report.failed), (2, 0));
}

#[tokio::test]
async fn retention_deletes_only_published_rows_older_than_the_period() {
    let ctx = TestContext::new("retention").await;
    let app = Application::build(ctx.settings()).await.unwrap();
    let old = ctx.write_events(&[Uuid::new_v4(), Uuid::new_v4()]).await;
    let recent = ctx.write_events(&[Uuid::new_v4()]).await;
    app.relay().relay_once().await.unwrap();
    let pending_old = ctx.write_events(&[Uuid::new_v4()]).await;
    let backend = ctx.db.get_database_backend();
    let two_hours_ago = Utc::now() - chrono::Duration::hours(2);
    for id in &old {
        ctx.db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "UPDATE outbox SET published_at = $1, created_at = $1 WHERE id = $2",
                [two_hours_ago.into(), (*id).into()],
            ))
            .await
            .unwrap();
    }
    ctx.db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "UPDATE outbox SET created_at = $1 WHERE id = $2",
            [two_hours_ago.into(), pending_old[0].into()],
        ))
        .await
        .unwrap();

    // Batch size 1: the purge loops until nothing old is left.
    let deleted = outbox::purge_published(&ctx.db, Duration::from_secs(3600), 1)
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    let left: Vec<Uuid> = ctx
        .db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT id FROM outbox ORDER BY seq",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get("", "id").unwrap())
        .collect();
    assert_eq!(left, [recent[0], pending_old[0]]);
}
