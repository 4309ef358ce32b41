//! The reader on PostgreSQL and SQLite: a mark tells whether a marked row's aggregate has a
//! later pending row (the relay claims again at once for it), and a claim's cost does not grow
//! with the backlog whatever plan PostgreSQL cached.

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
    let db = crate::sqlite_outbox().await;
    mark_reports_pending_successors(db).await;
}

/// The claim's plan must not depend on the statistics PostgreSQL had when it cached the
/// prepared statement's generic plan: on a brand-new table (as at a relay's first claims) it
/// chose an anti-join that read the whole pending index for every candidate row.
#[tokio::test]
async fn a_claim_probes_each_candidates_aggregate_even_with_a_plan_cached_on_an_empty_table() {
    common::testing::init_tracing();
    let db = one_connection_with_generic_plans("outbox_claim_generic_plan").await;
    enqueue(&db, Uuid::now_v7()).await;
    let txn = db.begin().await.unwrap();
    assert_eq!(outbox::claim_batch(&txn, 100, None).await.unwrap().len(), 1);
    txn.rollback().await.unwrap();

    // A backlog of 2,000 users' events, never analyzed.
    common::testing::scalar(
        &db,
        "WITH added AS (INSERT INTO outbox (id, aggregate_id, event_type, routing_key, payload, \
         headers, created_at) SELECT gen_random_uuid(), gen_random_uuid(), 'SignupAttemptedV1', \
         'signup.attempted', '{}', '{}', now() FROM generate_series(1, 2000) RETURNING 1) \
         SELECT COUNT(*) FROM added",
    )
    .await;

    let txn = db.begin().await.unwrap();
    assert_eq!(
        outbox::claim_batch(&txn, 100, None).await.unwrap().len(),
        100
    );
    let read = common::testing::rows_read_in_transaction(&txn, "outbox").await;
    txn.rollback().await.unwrap();
    // The claim reads its 100 rows, their index entries and a probe per candidate (none of
    // whose aggregates has an earlier row). The anti-join read the whole pending index for
    // every candidate: 100 × 2,001 entries.
    assert!(
        read <= 400,
        "the claim of 100 rows read {read} rows and index entries of the outbox"
    );
}

/// A fresh outbox whose plans are generic from the first execution.
async fn one_connection_with_generic_plans(label: &str) -> DatabaseConnection {
    common::testing::pinned_postgres_database::<crate::migration::Migrator>(label).await
}

/// Adds `rows` published rows of as many users, published now.
async fn add_published_rows(db: &DatabaseConnection, rows: u32) {
    common::testing::scalar(
        db,
        &format!(
            "WITH added AS (INSERT INTO outbox (id, aggregate_id, event_type, routing_key, \
             payload, headers, created_at, published_at) SELECT gen_random_uuid(), \
             gen_random_uuid(), 'SignupAttemptedV1', 'signup.attempted', '{{}}', '{{}}', now(), \
             now() FROM generate_series(1, {rows}) RETURNING 1) SELECT COUNT(*) FROM added"
        ),
    )
    .await;
}

#[tokio::test]
async fn a_mark_probes_its_rows_even_with_a_plan_cached_on_an_empty_table() {
    common::testing::init_tracing();
    let db = one_connection_with_generic_plans("outbox_mark_generic_plan").await;
    enqueue(&db, Uuid::now_v7()).await;
    let claimed = outbox::claim_batch(&db, 10, None).await.unwrap();
    outbox::mark_published(&db, &[claimed[0].seq], Utc::now())
        .await
        .unwrap();
    outbox::record_failure(&db, &[claimed[0].seq], "caching the plan")
        .await
        .unwrap();

    add_published_rows(&db, 5000).await;
    for _ in 0..100 {
        enqueue(&db, Uuid::now_v7()).await;
    }
    let claimed = outbox::claim_batch(&db, 100, None).await.unwrap();
    let seqs: Vec<i64> = claimed.iter().map(|row| row.seq).collect();
    assert_eq!(seqs.len(), 100);

    let txn = db.begin().await.unwrap();
    outbox::record_failure(&txn, &seqs, "broker away")
        .await
        .unwrap();
    let marked = outbox::mark_published(&txn, &seqs, Utc::now())
        .await
        .unwrap();
    assert_eq!(marked.rows, 100);
    let read = common::testing::rows_read_in_transaction(&txn, "outbox").await;
    txn.commit().await.unwrap();
    // Each statement probes the primary key for its 100 rows (and the mark probes each one's
    // aggregate). A sequential scan reads all 5,101 rows per statement.
    assert!(
        read <= 600,
        "a failure and a mark of 100 rows read {read} rows and index entries of the outbox"
    );
}

#[tokio::test]
async fn a_purge_with_nothing_to_delete_reads_almost_nothing_whatever_the_table_size() {
    common::testing::init_tracing();
    let db = one_connection_with_generic_plans("outbox_purge_generic_plan").await;
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(outbox::purge_published(&db, day, 100).await.unwrap(), 0);

    add_published_rows(&db, 5000).await;
    let txn = db.begin().await.unwrap();
    assert_eq!(outbox::purge_published(&txn, day, 100).await.unwrap(), 0);
    let read = common::testing::rows_read_in_transaction(&txn, "outbox").await;
    txn.rollback().await.unwrap();
    // Nothing was published a day ago: one probe of the published-at index finds that.
    assert!(
        read <= 10,
        "a purge that deleted nothing read {read} rows and index entries of 5,000"
    );
}
