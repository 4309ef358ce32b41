//! A delivery whose event another instance is still sending waits exactly until that claim
//! runs out (then this instance sends it if the other died), not until the next retry tier:
//! the recovery time after a crash is bounded by the send timeout.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Statement, Value};

use crate::helpers::{event_ids, registered, spawn_app_with};

#[tokio::test]
async fn an_event_claimed_by_a_dead_instance_is_sent_when_its_claim_runs_out() {
    // SMTP_TIMEOUT 2 s in the test settings: a claim lasts 2 × 2 s + 1 s = 5 s. The retry
    // tiers (200 ms, then 60 s) would make a deferral to "the next tier" wait a minute.
    let app = spawn_app_with(|settings| {
        settings.retry_delays = vec![Duration::from_millis(200), Duration::from_secs(60)];
        settings.inbox_retention = Duration::from_secs(24 * 3600);
    })
    .await;
    let event = registered("late@example.com", None);
    // Another instance claimed the event 2 s ago and died mid-send.
    let claimed_at = chrono::Utc::now() - chrono::Duration::seconds(2);
    app.db
        .execute_raw(Statement::from_sql_and_values(
            app.db.get_database_backend(),
            "INSERT INTO inbox (event_id, event_type, state, attempts, claimed_by, created_at, \
             updated_at) VALUES ($1, 'user.registered.v1', 'sending', 1, $2, $3, $3)",
            [
                Value::from(event.event_id),
                Value::from(uuid::Uuid::new_v4()),
                Value::from(claimed_at),
            ],
        ))
        .await
        .unwrap();
    let published = Instant::now();
    app.publish(&event).await;
    let mails = app.sink.wait_for(1, Duration::from_secs(20)).await.unwrap();
    let waited = published.elapsed();
    println!("sent {waited:?} after publishing (the claim had ~3 s left)");
    assert_eq!(event_ids(&mails), [event.event_id.to_string()]);
    assert!(
        waited >= Duration::from_secs(2),
        "not sent while the other instance's claim was live ({waited:?})"
    );
    assert!(
        waited < Duration::from_secs(10),
        "sent {waited:?} later: waited for a retry tier, not the claim"
    );
    app.stop().await;
}
