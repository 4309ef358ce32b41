//! The writer on PostgreSQL: rows commit with the caller's transaction, and the `NOTIFY` that
//! rides on the INSERT wakes a listener at commit, never on a rollback; `insert_with_event`
//! keeps a state change and its event together, in one statement on PostgreSQL.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use common::{database::PoolOptions, events::SignupAttemptedV1, trace::TraceContext};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, TransactionTrait,
    sea_query::{InsertStatement, Query},
};
use tokio_util::sync::{CancellationToken, DropGuard};
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

/// A relay's listener on `db`, once its LISTEN is in place (from then on nothing is missed);
/// it stops when the guard drops.
async fn listening(db: &DatabaseConnection) -> (outbox::Wakeup, DropGuard) {
    let wakeup = outbox::Wakeup::default();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone().drop_guard();
    tokio::spawn(outbox::listen(db.clone(), wakeup.clone(), shutdown));
    tokio::time::timeout(ARRIVES_WITHIN, wakeup.notified())
        .await
        .expect("LISTEN established");
    (wakeup, stop)
}

#[tokio::test]
async fn a_commit_wakes_the_listener_and_a_rollback_does_not() {
    let db = fresh_outbox("outbox_writer_notify").await;
    let (wakeup, _stop) = listening(&db).await;

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

/// A scratch table for the state change, and two inserts into it (of `ids`).
async fn notes_table(db: &DatabaseConnection) {
    db.execute_unprepared("CREATE TABLE notes (id uuid PRIMARY KEY)")
        .await
        .unwrap();
}

fn note_inserts(ids: &[Uuid]) -> Vec<InsertStatement> {
    ids.iter()
        .map(|id| {
            Query::insert()
                .into_table("notes")
                .columns(["id"])
                .values_panic([(*id).into()])
                .to_owned()
        })
        .collect()
}

/// Writes two notes and an event with `insert_with_event`, then the same again with a note
/// that exists: the second call must keep nothing, the event included.
async fn changes_and_their_event_are_kept_together(db: &DatabaseConnection) {
    notes_table(db).await;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let event_id = outbox::insert_with_event(
        db,
        note_inserts(&[first, second]),
        Utc::now(),
        event(),
        &TraceContext::new_root(),
    )
    .await
    .unwrap();
    let pending = outbox::claim_batch(db, 10, None).await.unwrap();
    assert_eq!(
        pending.iter().map(|row| row.id).collect::<Vec<_>>(),
        [event_id]
    );
    assert_eq!(
        common::testing::scalar(db, "SELECT COUNT(*) FROM notes").await,
        2
    );

    // A new note, then one that exists: nothing of this call is kept.
    let failed = outbox::insert_with_event(
        db,
        note_inserts(&[Uuid::now_v7(), second]),
        Utc::now(),
        event(),
        &TraceContext::new_root(),
    )
    .await;
    assert!(failed.is_err());
    assert_eq!(
        common::testing::scalar(db, "SELECT COUNT(*) FROM notes").await,
        2
    );
    assert_eq!(
        common::testing::scalar(db, "SELECT COUNT(*) FROM outbox").await,
        1
    );
}

#[tokio::test]
async fn inserts_and_their_event_are_one_statement_that_wakes_the_relay_on_postgresql() {
    let mut db = fresh_outbox("outbox_insert_with_event").await;
    let (wakeup, _stop) = listening(&db).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    db.set_metric_callback(move |info| sink.lock().unwrap().push(info.statement.sql.clone()));

    changes_and_their_event_are_kept_together(&db).await;
    tokio::time::timeout(ARRIVES_WITHIN, wakeup.notified())
        .await
        .expect("the write wakes the listener");
    let statements = log.lock().unwrap().clone();
    let writes: Vec<&String> = statements
        .iter()
        .filter(|sql| sql.contains("INSERT"))
        .collect();
    // One per call. In a transaction each insert is a statement of its own (and BEGIN and
    // COMMIT, which the callback does not report, two more round trips): 5 here.
    assert_eq!(writes.len(), 2, "{statements:#?}");
}

#[tokio::test]
async fn inserts_and_their_event_are_kept_together_on_sqlite() {
    let db = crate::sqlite_outbox().await;
    changes_and_their_event_are_kept_together(&db).await;
}
