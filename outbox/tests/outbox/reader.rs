//! The reader's mark on PostgreSQL and SQLite: it tells whether a marked row's aggregate has a
//! later pending row (the relay claims again at once for it).

use chrono::Utc;
use common::{database::PoolOptions, events::SignupAttemptedV1, trace::TraceContext};
use sea_orm::{DatabaseConnection, TransactionTrait};
use uuid::Uuid;

async fn enqueue(db: &DatabaseConnection, user: Uuid) {
    let txn = db.begin().await.unwrap();
    let event = SignupAttemptedV1 {
        user_id: user,
        email: "ann@example.com".to_owned(),
        attempted_at: Utc::now(),
        account_verified: false,
    };
    outbox::enqueue(&txn, Utc::now(), event, &TraceContext::new_root())
        .await
        .unwrap();
    txn.commit().await.unwrap();
}

async fn mark_reports_pending_successors(db: DatabaseConnection) {
    let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
    enqueue(&db, ann).await;
    enqueue(&db, bob).await;
    enqueue(&db, ann).await;

    // Ann's first and Bob's only row are eligible; Ann's second waits for her first.
    let claimed = outbox::claim_batch(&db, 10, None).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let of = |user: Uuid| -> Vec<i64> {
        claimed
            .iter()
            .filter(|row| row.aggregate_id == user)
            .map(|row| row.seq)
            .collect()
    };
    for (user, successors_pending) in [(bob, false), (ann, true)] {
        let marked = outbox::mark_published(&db, &of(user), Utc::now())
            .await
            .unwrap();
        assert_eq!(
            marked,
            outbox::Marked {
                rows: 1,
                successors_pending
            }
        );
    }

    // Now Ann's second row is the only one left, and nothing comes after it.
    let claimed = outbox::claim_batch(&db, 10, None).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let seqs: Vec<i64> = claimed.iter().map(|row| row.seq).collect();
    let marked = outbox::mark_published(&db, &seqs, Utc::now())
        .await
        .unwrap();
    assert!(!marked.successors_pending);
}

#[tokio::test]
async fn a_mark_tells_whether_an_aggregate_has_a_later_pending_row_on_postgresql() {
    common::testing::init_tracing();
    let url = common::testing::fresh_postgres_database("outbox_mark_successors")
        .await
        .unwrap();
    let db = common::database::connect_and_migrate::<crate::migration::Migrator>(
        &url,
        PoolOptions::new(2),
    )
    .await
    .unwrap();
    mark_reports_pending_successors(db).await;
}

#[tokio::test]
async fn a_mark_tells_whether_an_aggregate_has_a_later_pending_row_on_sqlite() {
    common::testing::init_tracing();
    let db = common::database::connect_and_migrate::<crate::migration::Migrator>(
        "sqlite::memory:",
        PoolOptions::new(1),
    )
    .await
    .unwrap();
    mark_reports_pending_successors(db).await;
}
