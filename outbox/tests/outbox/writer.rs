//! The writer on PostgreSQL: rows commit with the caller's transaction, and the `NOTIFY` that
//! rides on the INSERT wakes a listener at commit, never on a rollback.

use std::time::Duration;

use chrono::Utc;
use common::{database::PoolOptions, events::SignupAttemptedV1, trace::TraceContext};
use sea_orm::{DatabaseConnection, TransactionTrait};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Longest wait for a notification that must arrive.
const ARRIVES_WITHIN: Duration = Duration::from_secs(10);
/// How long a notification that must not arrive is given to show up anyway.
const QUIET_FOR: Duration = Duration::from_millis(500);

fn event() -> SignupAttemptedV1 {
    SignupAttemptedV1 {
        user_id: Uuid::now_v7(),
        email: "ann@example.com".to_owned(),
        attempted_at: Utc::now(),
        account_verified: false,
    }
}

async fn fresh_outbox(label: &str) -> DatabaseConnection {
    common::testing::init_tracing();
    let url = common::testing::fresh_postgres_database(label)
        .await
        .unwrap();
    common::database::connect_and_migrate::<crate::migration::Migrator>(&url, PoolOptions::new(4))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_commit_wakes_the_listener_and_a_rollback_does_not() {
    let db = fresh_outbox("outbox_writer_notify").await;
    let wakeup = outbox::Wakeup::default();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(outbox::listen(db.clone(), wakeup.clone(), shutdown));
    // The listener signals once when its LISTEN is in place: from then on nothing is missed.
    tokio::time::timeout(ARRIVES_WITHIN, wakeup.notified())
        .await
        .expect("LISTEN established");

    let txn = db.begin().await.unwrap();
    outbox::enqueue(&txn, Utc::now(), event(), &TraceContext::new_root())
        .await
        .unwrap();
    txn.rollback().await.unwrap();
    assert!(
        tokio::time::timeout(QUIET_FOR, wakeup.notified())
            .await
            .is_err(),
        "a rolled-back enqueue wakes nobody"
    );
    let rows = common::testing::scalar(&db, "SELECT COUNT(*) FROM outbox").await;
    assert_eq!(rows, 0);

    let txn = db.begin().await.unwrap();
    for _ in 0..2 {
        outbox::enqueue(&txn, Utc::now(), event(), &TraceContext::new_root())
            .await
            .unwrap();
    }
    txn.commit().await.unwrap();
    tokio::time::timeout(ARRIVES_WITHIN, wakeup.notified())
        .await
        .expect("the commit wakes the listener");
    let rows = common::testing::scalar(&db, "SELECT COUNT(*) FROM outbox").await;
    assert_eq!(rows, 2);
}
