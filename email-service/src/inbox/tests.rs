//! The inbox purge against a real PostgreSQL inbox (and SQLite).

use sea_orm::TransactionTrait;

use super::*;

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// Adds `count` inbox rows last touched `age_sql` ago (an SQL interval), in the final `sent`
/// state.
async fn add_sent_rows(db: &impl ConnectionTrait, count: u32, age_sql: &str) {
    let added = common::testing::scalar(
        db,
        &format!(
            "WITH added AS (INSERT INTO inbox (event_id, event_type, state, attempts, created_at, \
             updated_at, sent_at) SELECT gen_random_uuid(), 'user.registered.v1', 'sent', 1, \
             now() - interval '{age_sql}', now() - interval '{age_sql}', now() - interval \
             '{age_sql}' FROM generate_series(1, {count}) RETURNING 1) SELECT COUNT(*) FROM added"
        ),
    )
    .await;
    assert_eq!(added, i64::from(count));
}

#[tokio::test]
async fn a_purge_probes_the_update_index_even_with_a_plan_cached_on_a_new_inbox() {
    let db = common::testing::pinned_postgres_database::<crate::migration::Migrator>(
        "inbox_purge_generic_plan",
    )
    .await;
    add_sent_rows(&db, 1, "8 days").await;
    assert_eq!(purge_expired(&db, WEEK, 100).await.unwrap(), 1);

    // 5,000 recent mails, never analyzed, and one expired.
    add_sent_rows(&db, 5000, "1 hour").await;
    add_sent_rows(&db, 1, "8 days").await;

    let txn = db.begin().await.unwrap();
    assert_eq!(purge_expired(&txn, WEEK, 100).await.unwrap(), 1);
    let read = common::testing::rows_read_in_transaction(&txn, "inbox").await;
    txn.rollback().await.unwrap();
    // The expired row's index entry and its probe by key; the seq scan read all 5,002 rows.
    assert!(
        read <= 10,
        "a purge of 1 row read {read} rows and index entries of the inbox"
    );
}

#[tokio::test]
async fn a_purge_on_sqlite_deletes_the_expired_rows_only() {
    let db = crate::migration::connect_and_migrate("sqlite::memory:", 1)
        .await
        .unwrap();
    let now = Utc::now();
    for (age, state) in [(8, "sent"), (8, "failed"), (1, "sent")] {
        let at = now - chrono::Duration::days(age);
        db.execute_raw(statement(
            &db,
            "INSERT INTO inbox (event_id, event_type, state, attempts, created_at, updated_at) \
             VALUES ($1, 'user.registered.v1', $2, 1, $3, $3)",
            [Uuid::new_v4().into(), state.into(), at.into()],
        ))
        .await
        .unwrap();
    }
    assert_eq!(purge_expired(&db, WEEK, 100).await.unwrap(), 2);
    assert_eq!(
        common::testing::scalar(&db, "SELECT COUNT(*) FROM inbox").await,
        1
    );
}
