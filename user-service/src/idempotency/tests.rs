//! The purge of expired keys against a real PostgreSQL database.

use sea_orm::TransactionTrait;

use super::*;
use crate::password::Password;

fn ann() -> NewUser {
    NewUser {
        email: UserEmail::new("ann@example.com"),
        password: Password::new_unchecked("correct horse battery".into()),
        first_name: Some("Ann".into()),
        last_name: None,
        phone: None,
    }
}

#[tokio::test]
async fn a_keyed_registrations_purge_probes_the_expiry_index_even_with_a_plan_cached_on_a_new_table()
 {
    let db = common::testing::pinned_postgres_database::<crate::migration::Migrator>(
        "idempotency_purge_generic_plan",
    )
    .await;
    let (now, day) = (Utc::now(), Duration::from_secs(24 * 3600));
    let key = |k: &str| IdempotencyKey(k.into());
    let response = serde_json::json!({});
    store(
        &db,
        &key("first"),
        &ann(),
        StatusCode::CREATED,
        &response,
        now,
        day,
    )
    .await
    .unwrap();

    // 5,000 unexpired keys, never analyzed.
    common::testing::scalar(
        &db,
        "WITH added AS (INSERT INTO idempotency_keys (key, request_hash, response_status, \
         response_body, created_at, expires_at) SELECT md5(i::text), 'x', 201, '{}', now(), \
         now() + interval '1 day' FROM generate_series(1, 5000) i RETURNING 1) \
         SELECT COUNT(*) FROM added",
    )
    .await;

    let txn = db.begin().await.unwrap();
    store(
        &txn,
        &key("second"),
        &ann(),
        StatusCode::CREATED,
        &response,
        now,
        day,
    )
    .await
    .unwrap();
    let read = common::testing::rows_read_in_transaction(&txn, "idempotency_keys").await;
    txn.rollback().await.unwrap();
    // Nothing has expired: the purge's probe finds no index entry. The hash semi join read
    // every key.
    assert!(
        read <= 10,
        "a keyed registration's purge read {read} rows and index entries of idempotency_keys"
    );
}

#[tokio::test]
async fn expired_keys_are_purged_on_sqlite_too() {
    let db = crate::migration::connect_and_migrate("sqlite::memory:", 1)
        .await
        .unwrap();
    let (now, day) = (Utc::now(), Duration::from_secs(24 * 3600));
    let response = serde_json::json!({});
    let two_days_ago = now - chrono::Duration::days(2);
    let key = IdempotencyKey("old".into());
    store(
        &db,
        &key,
        &ann(),
        StatusCode::CREATED,
        &response,
        two_days_ago,
        day,
    )
    .await
    .unwrap();
    let key = IdempotencyKey("new".into());
    store(&db, &key, &ann(), StatusCode::CREATED, &response, now, day)
        .await
        .unwrap();
    let keys = common::testing::scalar(&db, "SELECT COUNT(*) FROM idempotency_keys").await;
    assert_eq!(keys, 1, "the expired key is purged, the new one stored");
}
