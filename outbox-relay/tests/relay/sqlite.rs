//! The same relay on SQLite: a single instance, polling plus the in-process wake-up.

use std::time::Duration;

use outbox_relay::Application;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestContext, collect, eventually, http_get};

#[tokio::test]
async fn a_single_relay_on_sqlite_publishes_and_wakes_in_process() {
    let path = std::env::temp_dir().join(format!("relay-test-{}.db", Uuid::new_v4().simple()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let ctx = TestContext::with_db_url(url).await;
    let mut consumer = ctx.bind_test_queue().await;
    let aggregates: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    ctx.write_events(&aggregates).await;
    ctx.write_events(&aggregates).await;

    let mut settings = ctx.settings();
    // Long enough that only the wake-up can explain a prompt publish below.
    settings.relay_poll_interval = Duration::from_secs(60);
    let app = Application::build(settings).await.unwrap();
    // One row per aggregate per batch: the second event of each user needs a second batch.
    assert_eq!(app.relay().relay_once().await.unwrap().published, 20);
    assert_eq!(app.relay().relay_once().await.unwrap().published, 20);
    assert_eq!(app.relay().relay_once().await.unwrap().claimed, 0);
    let deliveries = collect(&mut consumer, 40, Duration::from_secs(10)).await;
    assert_eq!(deliveries.len(), 40);
    assert_eq!(ctx.published_count().await, (40, 40));

    let wakeup = app.wakeup();
    let admin = app.admin_addr().unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone()));
    eventually(Duration::from_secs(10), "ready", || async {
        http_get(&format!("{admin}/health/ready")).await.0 == 200
    })
    .await;
    ctx.write_events(&[Uuid::new_v4()]).await;
    wakeup.wake();
    collect(&mut consumer, 1, Duration::from_secs(5)).await;
    let (status, metrics) = http_get(&format!("{admin}/metrics")).await;
    assert_eq!(status, 200);
    for name in [
        "outbox_relay_published_total",
        "outbox_relay_backlog",
        "outbox_relay_oldest_unpublished_age_seconds",
        "outbox_relay_confirm_latency_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    shutdown.cancel();
    running.await.unwrap().unwrap();
    let _ = std::fs::remove_file(&path);
}
