//! Squatting: pending accounts expire and free their address; a registration for a taken
//! address still answers 409 and writes one rate-limited notice to the owner; the confirmation
//! page says when the sign-up was made.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use user_service::delete_expired_pending_accounts;

use crate::helpers::{TestApp, ann, json_of, spawn_app, spawn_with, test_settings};

/// `created_at` and `password_hash` of the account of `email`.
async fn account(app: &TestApp, email: &str) -> Option<(DateTime<Utc>, String)> {
    let row = app
        .db
        .query_one_raw(Statement::from_sql_and_values(
            app.db.get_database_backend(),
            "SELECT created_at, password_hash FROM users WHERE email = $1",
            [email.into()],
        ))
        .await
        .unwrap()?;
    Some((
        row.try_get("", "created_at").unwrap(),
        row.try_get("", "password_hash").unwrap(),
    ))
}

#[tokio::test]
async fn a_pending_account_older_than_the_ttl_is_deleted_with_its_verifications_and_the_address_is_free_again()
 {
    let url = common::testing::fresh_postgres_database("squat_expiry")
        .await
        .unwrap();
    let mut settings = test_settings(url);
    settings.verification_ttl = Duration::from_secs(2);
    settings.pending_account_ttl = Duration::from_secs(2);
    settings.pending_account_sweep_interval = Duration::from_millis(100);
    let app = spawn_with(settings, None).await;

    let (status, first) = json_of(app.register(&ann()).await).await;
    assert_eq!(status, 201);
    // A verified account of the same age is kept.
    let bob = json!({"email": "bob@example.com", "password": "long enough"});
    assert_eq!(app.register(&bob).await.status(), 201);
    let (token, _) = app.latest_secrets().await;
    assert_eq!(app.verify_token(&token).await.0, 200);
    assert_eq!(app.count("verifications").await, 2);

    common::testing::eventually(
        Duration::from_secs(15),
        "the expired pending account to be deleted",
        || async { app.count("users").await == 1 },
    )
    .await;
    assert!(account(&app, "ann@example.com").await.is_none());
    assert!(account(&app, "bob@example.com").await.is_some());
    let ann_verifications = app
        .scalar(&format!(
            "SELECT COUNT(*) AS n FROM verifications WHERE user_id = '{}'",
            first["user_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ann_verifications, 0, "verifications cascade");
    assert_eq!(app.count("verifications").await, 1, "bob's stays");

    let (status, again) = json_of(app.register(&ann()).await).await;
    assert_eq!(status, 201, "the address can sign up again: {again}");
    assert_ne!(again["user_id"], first["user_id"]);
}

#[tokio::test]
async fn sweeps_are_bounded_batches_and_two_instances_delete_each_account_once() {
    let app = spawn_app("squat_sweep").await;
    for i in 0..30 {
        let body = json!({"email": format!("user{i}@example.com"), "password": "long enough"});
        assert_eq!(app.register(&body).await.status(), 201);
    }
    let later = Utc::now() + chrono::Duration::days(8);
    let week = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(
        delete_expired_pending_accounts(&app.db, week, Utc::now(), 7)
            .await
            .unwrap(),
        0,
        "not expired yet"
    );
    assert_eq!(
        delete_expired_pending_accounts(&app.db, week, later, 7)
            .await
            .unwrap(),
        7,
        "one bounded batch"
    );
    // A second "instance": its own pool on the same database; both sweep until empty.
    let other = common::database::connect(&app.database_url, common::database::PoolOptions::new(5))
        .await
        .unwrap();
    let sweep = |db: sea_orm::DatabaseConnection| async move {
        let mut total = 0;
        loop {
            let n = delete_expired_pending_accounts(&db, week, later, 3)
                .await
                .unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
    };
    let (a, b) = tokio::join!(sweep(app.db.clone()), sweep(other));
    assert_eq!(a + b, 23);
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn a_duplicate_registration_gets_409_and_five_of_them_write_one_notice() {
    let app = spawn_app("squat_notice").await;
    assert_eq!(app.register(&ann()).await.status(), 201);
    let (_, original_hash) = account(&app, "ann@example.com").await.unwrap();

    // Five duplicates at once, each with another password and names.
    let client = &app;
    let duplicates = (0..5).map(|i| {
        let body = json!({
            "email": " ANN@example.com",
            "password": format!("squatter password {i}"),
            "first_name": "Mallory",
        });
        async move { json_of(client.register(&body).await).await }
    });
    for (status, body) in futures::future::join_all(duplicates).await {
        assert_eq!(status, 409);
        assert_eq!(body["error"]["code"], "email_taken");
    }
    let notices = app.events("SignupAttemptedV1").await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    let data = &notices[0]["data"];
    assert_eq!(data["email"], "ann@example.com");
    assert_eq!(data["account_verified"], false);
    let outbox: Vec<Value> = app.outbox().await.into_iter().map(|row| row.2).collect();
    assert_eq!(
        outbox[1]["event_type"], "SignupAttemptedV1",
        "routing by the existing naming"
    );
    let everything = format!("{outbox:?}");
    assert!(!everything.contains("squatter password"), "password leaked");
    assert!(
        !everything.contains("Mallory"),
        "the duplicate's name leaked"
    );
    let (_, hash) = account(&app, "ann@example.com").await.unwrap();
    assert_eq!(
        hash, original_hash,
        "the duplicate's password is not stored"
    );
    assert_eq!(app.count("users").await, 1);

    // Once the interval has passed, the next attempt writes the next notice.
    app.db
        .execute_unprepared(
            "UPDATE users SET last_attempt_notice_at = last_attempt_notice_at - interval '25 hours'",
        )
        .await
        .unwrap();
    assert_eq!(app.register(&ann()).await.status(), 409);
    assert_eq!(app.events("SignupAttemptedV1").await.len(), 2);
    let routing_keys: Vec<String> = app.outbox().await.into_iter().map(|row| row.1).collect();
    assert_eq!(routing_keys.last().unwrap(), "user.signup_attempted.v1");
}

#[tokio::test]
async fn the_confirmation_page_and_the_event_say_when_the_sign_up_was_made() {
    let app = spawn_app("squat_page").await;
    assert_eq!(app.register(&ann()).await.status(), 201);
    let (created_at, _) = account(&app, "ann@example.com").await.unwrap();
    let registered = &app.events("UserRegisteredV1").await[0]["data"]["registered_at"];
    let registered: DateTime<Utc> = serde_json::from_value(registered.clone()).unwrap();
    // PostgreSQL keeps microseconds.
    assert_eq!(registered.timestamp_micros(), created_at.timestamp_micros());

    let (token, _) = app.latest_secrets().await;
    let page = app.get(&format!("/user/verify?token={token}")).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let expected = format!(
        "used to sign up on {}.",
        created_at.format("%Y-%m-%d %H:%M UTC")
    );
    assert!(html.contains(&expected), "{html}");
    let deleted = created_at + chrono::Duration::days(7);
    assert!(
        html.contains(&format!(
            "deleted on {}",
            deleted.format("%Y-%m-%d %H:%M UTC")
        )),
        "{html}"
    );
}

#[tokio::test]
async fn a_sweep_probes_the_pending_index_even_with_a_plan_cached_on_a_new_table() {
    use sea_orm::TransactionTrait;
    let db = common::testing::pinned_postgres_database::<user_service::migration::Migrator>(
        "squat_sweep_generic_plan",
    )
    .await;
    let week = Duration::from_secs(7 * 24 * 3600);
    let add_expired = "WITH added AS (INSERT INTO users (id, email, password_hash, status, \
                       created_at) VALUES (gen_random_uuid(), gen_random_uuid() || '@example.com', \
                       'x', 'pending_verification', now() - interval '8 days') RETURNING 1) \
                       SELECT COUNT(*) FROM added";
    common::testing::scalar(&db, add_expired).await;
    assert_eq!(
        delete_expired_pending_accounts(&db, week, Utc::now(), 500)
            .await
            .unwrap(),
        1
    );

    // 5,000 verified users as old, never analyzed, and one more expired.
    common::testing::scalar(
        &db,
        "WITH added AS (INSERT INTO users (id, email, password_hash, status, created_at, \
         verified_at) SELECT gen_random_uuid(), 'user' || i || '@example.com', 'x', 'verified', \
         now() - interval '30 days', now() FROM generate_series(1, 5000) i RETURNING 1) \
         SELECT COUNT(*) FROM added",
    )
    .await;
    common::testing::scalar(&db, add_expired).await;

    let txn = db.begin().await.unwrap();
    assert_eq!(
        delete_expired_pending_accounts(&txn, week, Utc::now(), 500)
            .await
            .unwrap(),
        1
    );
    let read = common::testing::rows_read_in_transaction(&txn, "users").await;
    txn.rollback().await.unwrap();
    // The expired account's entry in `users_pending_by_age`, twice; the two seq scans read all
    // 5,002 users.
    assert!(
        read <= 10,
        "a sweep of 1 account read {read} rows and index entries of users"
    );
}
