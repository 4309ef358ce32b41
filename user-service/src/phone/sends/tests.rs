//! The velocity limits' counts against a real PostgreSQL database.

use std::net::{IpAddr, Ipv4Addr};

use sea_orm::TransactionTrait;

use super::*;

#[tokio::test]
async fn the_global_velocity_count_walks_the_time_index_even_with_a_plan_cached_on_a_new_table() {
    let db = common::testing::pinned_postgres_database::<crate::migration::Migrator>(
        "phone_velocity_generic_plan",
    )
    .await;
    let settings = Settings::default();
    let phone = Phone::parse("+447400123456", &settings).unwrap();
    let client = ClientAddress(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let now = Utc::now();
    let sent = |now| SendRecord {
        phone: &phone,
        client,
        now,
        verification_id: None,
        send_number: Some(1),
        blocked: None,
    };
    record(&db, sent(now), &settings).await.unwrap();
    assert_eq!(
        velocity_block(&db, &phone, client, now, &settings)
            .await
            .unwrap(),
        None
    );

    // 5,000 sends to other numbers from other addresses, over an hour ago, never analyzed.
    common::testing::scalar(
        &db,
        "WITH added AS (INSERT INTO phone_sends (id, phone, prefix, client_ip, created_at, \
         send_number) SELECT gen_random_uuid(), '+4477009' || lpad(i::text, 5, '0'), '+4477009', \
         '198.51.100.' || (i % 250), now() - interval '2 hours', 1 \
         FROM generate_series(1, 5000) i RETURNING 1) SELECT COUNT(*) FROM added",
    )
    .await;

    let txn = db.begin().await.unwrap();
    assert_eq!(
        velocity_block(&txn, &phone, client, now, &settings)
            .await
            .unwrap(),
        None
    );
    let read = common::testing::rows_read_in_transaction(&txn, "phone_sends").await;
    txn.rollback().await.unwrap();
    // Four counts, each reading the one send in the window (and its index entry); the global
    // count's seq scan read all 5,001 sends.
    assert!(
        read <= 20,
        "the velocity counts read {read} rows and index entries of phone_sends"
    );
}
