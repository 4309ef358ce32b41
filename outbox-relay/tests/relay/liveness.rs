//! Liveness: a relay stuck in a batch (here: its claim waits on a table lock that never goes
//! away) answers 503 on `/health/live`, so an orchestrator restarts it; it is live again when
//! the batch can finish.

use std::time::Duration;

use sea_orm::{ConnectionTrait, TransactionTrait};
use uuid::Uuid;

use crate::helpers::{TestContext, eventually, http_get, spawn_live_relay};

#[tokio::test]
async fn a_relay_stuck_in_a_batch_is_not_live_until_the_batch_can_finish() {
    let ctx = TestContext::new("liveness").await;
    let mut consumer = ctx.bind_test_queue().await;
    let (admin, _stop) = spawn_live_relay(outbox_relay::Settings {
        relay_confirm_timeout: Duration::from_secs(1),
        relay_stall_timeout: Some(Duration::from_secs(2)),
        ..ctx.settings()
    })
    .await;
    let live = || async { http_get(&format!("{admin}/health/live")).await.0 };

    // Another session holds the outbox in ACCESS EXCLUSIVE mode: the next claim blocks.
    let blocker = ctx.db.begin().await.unwrap();
    blocker
        .execute_unprepared("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "not live while stuck", || async {
        live().await == 503
    })
    .await;
    let (_, body) = http_get(&format!("{admin}/health/live")).await;
    assert!(body.contains("stalled"), "{body}");

    blocker.rollback().await.unwrap();
    eventually(Duration::from_secs(15), "live again", || async {
        live().await == 200
    })
    .await;
    ctx.write_events(&[Uuid::new_v4()]).await;
    crate::helpers::collect(&mut consumer, 1, Duration::from_secs(10)).await;
}
