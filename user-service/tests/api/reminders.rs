//! The reminder scheduler, driven deterministically with an explicit `now`.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use user_service::send_due_reminders;

use crate::helpers::{spawn_with, test_settings};

const HOUR: Duration = Duration::from_secs(3600);

async fn app_with_reminders(label: &str, max: u32) -> crate::helpers::TestApp {
    let url = common::testing::fresh_postgres_database(label)
        .await
        .unwrap();
    let mut settings = test_settings(url);
    settings.reminder_interval = HOUR;
    settings.max_reminders = max;
    spawn_with(settings, None).await
}

#[tokio::test]
async fn reminders_stop_after_the_maximum_and_each_has_a_working_link() {
    let app = app_with_reminders("reminders_max", 2).await;
    assert_eq!(app.register(&crate::helpers::ann()).await.status(), 201);
    let start = Utc::now();

    assert_eq!(
        send_due_reminders(&app.db, &app.settings, start)
            .await
            .unwrap(),
        0,
        "not due yet"
    );
    let first_due = start + chrono::Duration::seconds(3601);
    assert_eq!(
        send_due_reminders(&app.db, &app.settings, first_due)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        send_due_reminders(&app.db, &app.settings, first_due)
            .await
            .unwrap(),
        0,
        "moved on"
    );
    let second_due = first_due + chrono::Duration::seconds(3601);
    assert_eq!(
        send_due_reminders(&app.db, &app.settings, second_due)
            .await
            .unwrap(),
        1
    );
    let much_later = second_due + chrono::Duration::days(30);
    assert_eq!(
        send_due_reminders(&app.db, &app.settings, much_later)
            .await
            .unwrap(),
        0,
        "max reached"
    );

    let reminders = app.events("VerificationReminderV1").await;
    assert_eq!(reminders.len(), 2);
    assert_eq!(reminders[0]["data"]["reminder_number"], 1);
    assert_eq!(reminders[1]["data"]["reminder_number"], 2);
    // The newest reminder's link works.
    let (token, _) = app.latest_secrets().await;
    let response = app.verify_token(&token).await;
    assert_eq!(response.0, 200);
}

#[tokio::test]
async fn verifying_after_the_first_reminder_stops_the_second() {
    let app = app_with_reminders("reminders_stop", 2).await;
    assert_eq!(app.register(&crate::helpers::ann()).await.status(), 201);
    let first_due = Utc::now() + chrono::Duration::seconds(3601);
    assert_eq!(
        send_due_reminders(&app.db, &app.settings, first_due)
            .await
            .unwrap(),
        1
    );
    let (token, _) = app.latest_secrets().await;
    assert_eq!(app.verify_token(&token).await.0, 200);
    let later = first_due + chrono::Duration::days(30);
    assert_eq!(
        send_due_reminders(&app.db, &app.settings, later)
            .await
            .unwrap(),
        0
    );
    assert_eq!(app.events("VerificationReminderV1").await.len(), 1);
}

#[tokio::test]
async fn two_schedulers_together_send_each_reminder_once() {
    let app = app_with_reminders("reminders_two", 2).await;
    for i in 0..30 {
        let body = json!({"email": format!("user{i}@example.com"), "password": "long enough"});
        assert_eq!(app.register(&body).await.status(), 201);
    }
    // A second "instance": its own connection pool to the same database.
    let other = common::database::connect(&app.database_url, common::database::PoolOptions::new(5))
        .await
        .unwrap();
    let due = Utc::now() + chrono::Duration::seconds(3601);
    let (a, b) = tokio::join!(
        send_due_reminders(&app.db, &app.settings, due),
        send_due_reminders(&other, &app.settings, due),
    );
    assert_eq!(a.unwrap() + b.unwrap(), 30);
    let reminders = app.events("VerificationReminderV1").await;
    assert_eq!(reminders.len(), 30);
    let users: std::collections::HashSet<_> = reminders
        .iter()
        .map(|r| r["data"]["user_id"].to_string())
        .collect();
    assert_eq!(users.len(), 30, "no user reminded twice");
}

/// Adds a pending user whose first reminder was due a minute ago.
async fn add_due_user(db: &impl sea_orm::ConnectionTrait) {
    common::testing::scalar(
        db,
        "WITH added AS (INSERT INTO users (id, email, password_hash, status, created_at, \
         next_reminder_at) VALUES (gen_random_uuid(), gen_random_uuid() || '@example.com', 'x', \
         'pending_verification', now() - interval '1 day', now() - interval '1 minute') \
         RETURNING 1) SELECT COUNT(*) FROM added",
    )
    .await;
}

#[tokio::test]
async fn a_reminder_claim_probes_the_due_index_even_with_a_plan_cached_on_a_new_table() {
    use sea_orm::TransactionTrait;
    let db = common::testing::pinned_postgres_database::<user_service::migration::Migrator>(
        "reminders_generic_plan",
    )
    .await;
    // The reminders are given the connection; the settings' URL is not used.
    let mut settings = test_settings(String::new());
    settings.reminder_interval = HOUR;
    add_due_user(&db).await;
    assert_eq!(
        send_due_reminders(&db, &settings, Utc::now())
            .await
            .unwrap(),
        1
    );

    // 5,000 verified users (no reminder due), never analyzed, and one more due.
    common::testing::scalar(
        &db,
        "WITH added AS (INSERT INTO users (id, email, password_hash, status, created_at, \
         verified_at) SELECT gen_random_uuid(), 'user' || i || '@example.com', 'x', 'verified', \
         now(), now() FROM generate_series(1, 5000) i RETURNING 1) SELECT COUNT(*) FROM added",
    )
    .await;
    add_due_user(&db).await;

    let txn = db.begin().await.unwrap();
    assert_eq!(
        send_due_reminders(&txn, &settings, Utc::now())
            .await
            .unwrap(),
        1
    );
    let read = common::testing::rows_read_in_transaction(&txn, "users").await;
    txn.rollback().await.unwrap();
    // Two claims (the due user, then none), the update and the verification's foreign key
    // check, each a probe of a few entries; the seq scan read all 5,002 users per claim.
    assert!(
        read <= 20,
        "one reminder read {read} rows and index entries of users"
    );
}

#[tokio::test]
async fn reminders_are_sent_on_sqlite_too() {
    let app = crate::helpers::spawn_sqlite_app().await;
    assert_eq!(app.register(&crate::helpers::ann()).await.status(), 201);
    let start = Utc::now();
    assert_eq!(
        send_due_reminders(&app.db, &app.settings, start)
            .await
            .unwrap(),
        0,
        "not due yet"
    );
    let due = start + chrono::Duration::from_std(app.settings.reminder_interval).unwrap();
    let due = due + chrono::Duration::seconds(1);
    assert_eq!(
        send_due_reminders(&app.db, &app.settings, due)
            .await
            .unwrap(),
        1
    );
    assert_eq!(app.events("VerificationReminderV1").await.len(), 1);
}
