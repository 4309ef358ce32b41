//! The engine's statements on PostgreSQL with a generic plan cached on small, never-analyzed
//! tables (what a new deployment caches in its first minutes, and keeps until the next ANALYZE):
//! each statement runs once on a tiny table, the table grows, and the statement run again must
//! read about the rows it touches, not the whole table or index.

use std::time::Duration;

use chrono::Utc;
use common::testing::{pages_read_in_transaction, rows_read_in_transaction, scalar};
use sea_orm::{DatabaseConnection, EntityTrait, TransactionTrait};
use uuid::Uuid;

use super::{
    claim,
    record::{self, Change},
    retention,
};
use crate::entity::delivery;

/// A fresh, migrated database whose plans are generic from the first execution.
async fn pinned_database(label: &str) -> DatabaseConnection {
    common::testing::pinned_postgres_database::<crate::migration::Migrator>(label).await
}

/// Runs `sql` (an `INSERT`) and returns how many rows it inserted.
async fn insert(db: &DatabaseConnection, sql: &str) -> i64 {
    scalar(
        db,
        &format!("WITH added AS ({sql} RETURNING 1) SELECT COUNT(*) FROM added"),
    )
    .await
}

/// Inserts `n` deliveries of `endpoint` (SQL) in `status` (completed now unless pending), due
/// at `due` (SQL).
async fn deliveries(db: &DatabaseConnection, n: usize, endpoint: &str, status: &str, due: &str) {
    let completed = if status == "pending" { "NULL" } else { "now()" };
    insert(
        db,
        &format!(
            "INSERT INTO deliveries (id, kind, endpoint_id, url, method, headers, timeout_ms, \
             status, attempts, next_attempt_at, created_at, updated_at, completed_at) \
             SELECT gen_random_uuid(), 'job', {endpoint}, 'http://unused.invalid/', 'POST', \
             '[]', 1000, '{status}', 1, {due}, now(), now(), {completed} \
             FROM generate_series(1, {n}) AS g"
        ),
    )
    .await;
}

/// A pending delivery due in an hour, leased until then (as a claim leaves it).
async fn leased(db: &DatabaseConnection) -> delivery::Model {
    let id = Uuid::now_v7();
    insert(
        db,
        &format!(
            "INSERT INTO deliveries (id, kind, url, method, headers, timeout_ms, status, \
             attempts, next_attempt_at, leased_until, created_at, updated_at) \
             VALUES ('{id}', 'job', 'http://unused.invalid/', 'POST', '[]', 1000, 'pending', \
             1, date_trunc('second', now()) + interval '1 hour', \
             date_trunc('second', now()) + interval '1 hour', now(), now())"
        ),
    )
    .await;
    delivery::Entity::find_by_id(id)
        .one(db)
        .await
        .expect("read")
        .expect("the leased row")
}

fn succeeded(claimed: delivery::Model) -> Change {
    let now = Utc::now();
    Change {
        attempts: claimed.attempts,
        claimed,
        attempt: None,
        status: delivery::status::SUCCEEDED,
        next_attempt_at: now,
        last_status: Some(200),
        last_error: None,
        health: None,
        now,
    }
}

/// Recording a batch must find its deliveries by id: the generic plan cached on a small table
/// walked the whole pending index (the backlog) and matched the batch by a join filter.
#[tokio::test]
async fn recording_a_batch_reads_its_deliveries_even_with_a_plan_cached_on_a_small_table() {
    let db = pinned_database("webhook_record_generic_plan").await;
    deliveries(&db, 15, "NULL", "succeeded", "now()").await;
    let (a, b) = (succeeded(leased(&db).await), succeeded(leased(&db).await));
    let recorded = record::record_batch(&db, &[&a, &b])
        .await
        .expect("recorded");
    assert!(recorded.iter().all(|r| r.applied));

    // A backlog of 3,000 pending rows, never analyzed.
    deliveries(&db, 3000, "NULL", "pending", "now() + interval '1 hour'").await;

    let (a, b) = (succeeded(leased(&db).await), succeeded(leased(&db).await));
    let txn = db.begin().await.unwrap();
    let recorded = record::record_batch(&txn, &[&a, &b])
        .await
        .expect("recorded");
    assert!(recorded.iter().all(|r| r.applied));
    let read = rows_read_in_transaction(&txn, "deliveries").await;
    txn.rollback().await.unwrap();
    assert!(
        read <= 20,
        "recording 2 attempts read {read} rows and index entries of deliveries"
    );
}

/// Putting a row back must find it by id: the generic plan cached on a small table searched
/// the pending index for it (the id is its third column), walking the whole index.
#[tokio::test]
async fn putting_a_row_back_reads_that_row_even_with_a_plan_cached_on_a_small_table() {
    let db = pinned_database("webhook_put_back_generic_plan").await;
    deliveries(&db, 15, "NULL", "succeeded", "now()").await;
    deliveries(&db, 4, "NULL", "pending", "now() + interval '1 hour'").await;
    let first = leased(&db).await;
    claim::put_back(&db, &[first]).await.expect("put back");

    // A backlog of 20,000 pending rows, never analyzed.
    deliveries(&db, 20_000, "NULL", "pending", "now()").await;

    let second = leased(&db).await;
    let txn = db.begin().await.unwrap();
    let before = pages_read_in_transaction(&txn, "deliveries").await;
    claim::put_back(&txn, &[second]).await.expect("put back");
    let read = rows_read_in_transaction(&txn, "deliveries").await;
    let pages = pages_read_in_transaction(&txn, "deliveries").await - before;
    txn.rollback().await.unwrap();
    assert!(
        read <= 10,
        "putting one row back read {read} rows and index entries of deliveries"
    );
    // A probe of the primary key, the row's page, and an entry in each of the six indexes
    // (the row moves in the pending index): a few dozen pages. The pending index alone is over
    // 100 pages long.
    assert!(
        pages <= 50,
        "putting one row back read {pages} pages of deliveries and its indexes"
    );
}

/// Inserts `n` messages created `age` (SQL interval) ago, and a pending delivery of each
/// (without reading either table: a session reports its reads late, so a read here would count
/// in the next transaction's).
async fn referred_messages(db: &DatabaseConnection, n: usize, age: &str) {
    scalar(
        db,
        &format!(
            "WITH m AS (INSERT INTO messages (id, event_type, payload, created_at) \
               SELECT gen_random_uuid(), 'user.registered', '{{}}', now() - interval '{age}' \
               FROM generate_series(1, {n}) RETURNING id), \
             d AS (INSERT INTO deliveries (id, kind, message_id, url, method, headers, \
               timeout_ms, status, attempts, next_attempt_at, created_at, updated_at) \
               SELECT gen_random_uuid(), 'webhook', m.id, 'http://unused.invalid/', 'POST', \
               '[]', 1000, 'pending', 0, now() + interval '1 hour', now(), now() FROM m \
               RETURNING 1) \
             SELECT COUNT(*) FROM d"
        ),
    )
    .await;
}

/// Purges once (caching the plans) after `seed` (empty tables, or 20 messages, half of them
/// old, each with a pending delivery), grows the tables, and purges again; the rows and index
/// entries that second purge read of attempts, deliveries and messages.
async fn purge_after_growth(label: &str, seed: bool) -> Vec<(&'static str, i64)> {
    let db = pinned_database(label).await;
    let cutoff = || common::database::retention_cutoff(Duration::from_secs(30 * 24 * 3600));
    if seed {
        referred_messages(&db, 10, "0 days").await;
        referred_messages(&db, 10, "40 days").await;
    }
    assert_eq!(retention::purge(&db, cutoff()).await.expect("purged"), 0);

    // Recent attempts, finished deliveries and messages (3,000 each), and 50 (more) old
    // messages still referred to by a pending delivery each; never analyzed.
    insert(
        &db,
        "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, url) \
         SELECT gen_random_uuid(), 1, now(), 5, 'http://unused.invalid/' \
         FROM generate_series(1, 3000)",
    )
    .await;
    deliveries(&db, 3000, "NULL", "succeeded", "now()").await;
    insert(
        &db,
        "INSERT INTO messages (id, event_type, payload, created_at) \
         SELECT gen_random_uuid(), 'user.registered', '{}', now() \
         FROM generate_series(1, 3000)",
    )
    .await;
    referred_messages(&db, 50, "40 days").await;

    let txn = db.begin().await.unwrap();
    assert_eq!(retention::purge(&txn, cutoff()).await.expect("purged"), 0);
    let mut reads = Vec::new();
    for table in ["attempts", "deliveries", "messages"] {
        reads.push((table, rows_read_in_transaction(&txn, table).await));
    }
    txn.rollback().await.unwrap();
    reads
}

/// A purge with nothing old to delete must read next to nothing: the generic plans cached on
/// empty tables scanned attempts, deliveries and messages whole.
#[tokio::test]
async fn a_purge_reads_only_old_rows_even_with_plans_cached_on_empty_tables() {
    let reads = purge_after_growth("webhook_purge_empty_generic_plan", false).await;
    // Each of the 50 old messages is read once with its index entry, and probes deliveries
    // once.
    assert!(
        reads.iter().all(|&(_, read)| read <= 150),
        "a purge with nothing to delete read (rows and index entries): {reads:?}"
    );
}

/// The same with plans cached on small tables: the messages' cached anti-join scanned
/// deliveries whole to match the old messages still referred to.
#[tokio::test]
async fn a_purge_reads_only_old_rows_even_with_plans_cached_on_small_tables() {
    let reads = purge_after_growth("webhook_purge_small_generic_plan", true).await;
    // Each of the 60 old messages is read once with its index entry, and probes deliveries
    // once.
    assert!(
        reads.iter().all(|&(_, read)| read <= 150),
        "a purge with nothing to delete read (rows and index entries): {reads:?}"
    );
}
