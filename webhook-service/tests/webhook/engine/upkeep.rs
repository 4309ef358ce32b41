//! Retention, metrics and shutdown.

use crate::helpers::TestService;
use std::time::{Duration, Instant};

use uuid::Uuid;
use webhook_service::Application;

use super::{
    WAIT,
    rows::{self, Endpoint, NewRow, delivery, insert, insert_endpoint},
};
use crate::helpers::{Receiver, Reply, eventually, test_settings};

/// Days past the default retention (30 days) the old rows are backdated by.
const OLD: i32 = 31;

/// Inserts a delivery: `status`, created (and completed, unless pending) `age_days` ago; due in
/// an hour when pending, so no engine sends it.
async fn insert_aged(
    db: &sea_orm::DatabaseConnection,
    kind: &str,
    refs: (Option<Uuid>, Option<Uuid>, Option<Uuid>),
    status: &str,
    age_days: i32,
) -> Uuid {
    let id = Uuid::now_v7();
    let sql_ref = |r: Option<Uuid>| r.map_or_else(|| "NULL".to_owned(), |id| format!("'{id}'"));
    let (endpoint_id, message_id, job_id) = (sql_ref(refs.0), sql_ref(refs.1), sql_ref(refs.2));
    let at = format!("now() - interval '{age_days} days'");
    let completed = if status == "pending" { "NULL" } else { &at };
    rows::execute(
        db,
        &format!(
            "INSERT INTO deliveries (id, kind, endpoint_id, message_id, job_id, url, method, \
             headers, timeout_ms, status, attempts, next_attempt_at, created_at, updated_at, \
             completed_at) VALUES ('{id}', '{kind}', {endpoint_id}, {message_id}, {job_id}, \
             'http://unused.invalid/', 'POST', '[]', 1000, '{status}', 1, \
             now() + interval '1 hour', {at}, {at}, {completed})"
        ),
    )
    .await;
    id
}

/// Inserts a message or a job created `age_days` ago.
async fn insert_aged_parent(db: &sea_orm::DatabaseConnection, table: &str, age_days: i32) -> Uuid {
    let id = Uuid::now_v7();
    let at = format!("now() - interval '{age_days} days'");
    let sql = match table {
        "messages" => format!(
            "INSERT INTO messages (id, event_type, payload, created_at) \
             VALUES ('{id}', 'user.registered', '{{}}', {at})"
        ),
        _ => format!(
            "INSERT INTO jobs (id, request_fingerprint, request, notify_secret, created_at) \
             VALUES ('{id}', 'f', '{{\"headers\": [[\"authorization\", \"Bearer s3cret\"]]}}', \
             'whsec_c2VjcmV0', {at})"
        ),
    };
    rows::execute(db, &sql).await;
    id
}

async fn exists(db: &sea_orm::DatabaseConnection, table: &str, id: Uuid) -> bool {
    rows::count(
        db,
        &format!("SELECT COUNT(*) FROM {table} WHERE id = '{id}'"),
    )
    .await
        == 1
}

#[tokio::test]
async fn retention_purges_old_finished_rows_and_jobs_and_keeps_pending_ones() {
    let settings = test_settings("engine_retention").await;
    // The schema, then rows backdated past the retention; the purge runs as the engine starts.
    let db = Application::build(settings.clone())
        .await
        .expect("migrated")
        .db()
        .clone();
    let endpoint_id = insert_endpoint(&db, &Endpoint::new("http://unused.invalid/".into())).await;
    let webhook = |message: Uuid| (Some(endpoint_id), Some(message), None);
    let of_job = |job: Uuid| (None, None, Some(job));

    let old_message = insert_aged_parent(&db, "messages", OLD).await;
    let delivered = insert_aged(&db, "webhook", webhook(old_message), "succeeded", OLD).await;
    rows::execute(
        &db,
        &format!(
            "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, url) \
             VALUES ('{delivered}', 1, now() - interval '{OLD} days', 5, 'http://unused.invalid/')"
        ),
    )
    .await;
    let waiting_message = insert_aged_parent(&db, "messages", OLD).await;
    let waiting = insert_aged(&db, "webhook", webhook(waiting_message), "pending", OLD).await;
    // A finished job whose report was sent: purged with its credentials.
    let done_job = insert_aged_parent(&db, "jobs", OLD).await;
    let done_call = insert_aged(&db, "job", of_job(done_job), "succeeded", OLD).await;
    let done_report = insert_aged(&db, "notify", of_job(done_job), "failed", OLD).await;
    // Old jobs still waiting: for their call (scheduled far ahead), or for their report.
    let scheduled_job = insert_aged_parent(&db, "jobs", OLD).await;
    insert_aged(&db, "job", of_job(scheduled_job), "pending", OLD).await;
    let reporting_job = insert_aged_parent(&db, "jobs", OLD).await;
    insert_aged(&db, "job", of_job(reporting_job), "succeeded", OLD).await;
    insert_aged(&db, "notify", of_job(reporting_job), "pending", 0).await;
    // A recent job, finished.
    let recent_job = insert_aged_parent(&db, "jobs", 0).await;
    insert_aged(&db, "job", of_job(recent_job), "succeeded", 0).await;

    let service = TestService::start(settings).await;
    eventually(WAIT, "old finished rows purged", || async {
        let db = &service.db;
        !exists(db, "deliveries", delivered).await
            && rows::count(
                db,
                &format!("SELECT COUNT(*) FROM attempts WHERE delivery_id = '{delivered}'"),
            )
            .await
                == 0
            && !exists(db, "messages", old_message).await
            && !exists(db, "deliveries", done_call).await
            && !exists(db, "deliveries", done_report).await
            && !exists(db, "jobs", done_job).await
    })
    .await;
    assert_eq!(delivery(&service.db, waiting).await.status, "pending");
    assert!(
        exists(&service.db, "messages", waiting_message).await,
        "a message with a pending delivery stays"
    );
    for (job, why) in [
        (scheduled_job, "its call is pending"),
        (reporting_job, "its report is pending"),
        (recent_job, "it is recent"),
    ] {
        assert!(exists(&service.db, "jobs", job).await, "a job stays: {why}");
    }
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
