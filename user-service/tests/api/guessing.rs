//! Guessing codes is bounded per account, whatever the resends (issue 14, item 1), and code
//! verification and resend answer alike, in the same time, for every state of an address
//! (item 5).

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use user_service::CodeKey;

use crate::helpers::{TestApp, ann, spawn_tuned};

/// `POST /user/verify` with `email` and `code` gets the one refusal answer.
async fn assert_code_refused(app: &TestApp, email: &str, code: &str) {
    let (status, body) = app.verify_code(email, code).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_code")),
        "{email} {code}: {body}"
    );
}

fn wrong_for(code: &str) -> &'static str {
    if code == "000000" { "111111" } else { "000000" }
}

#[tokio::test]
async fn resend_and_guess_cycles_never_check_more_wrong_codes_than_the_daily_cap() {
    let app = spawn_tuned("guess_cycles", |s| {
        s.resend_min_interval = Duration::ZERO;
        s.max_resends_per_day = 100;
        s.max_code_attempts = 5;
        s.max_wrong_codes_per_day = 10;
    })
    .await;
    assert_eq!(app.register(&ann()).await.status(), 201);
    // 30 cycles of a fresh code and 3 wrong guesses: 90 guesses, each answered alike.
    for _ in 0..30 {
        assert_eq!(app.resend("ann@example.com").await.status(), 202);
        let (_, code) = app.latest_secrets().await;
        for _ in 0..3 {
            assert_code_refused(&app, "ann@example.com", wrong_for(&code)).await;
        }
    }
    assert_eq!(app.events("VerificationResentV1").await.len(), 30);
    // Only the first 10 wrong codes were checked at all; the other 80 were refused unseen.
    assert_eq!(
        app.scalar("SELECT COALESCE(SUM(attempts), 0) AS n FROM verifications")
            .await,
        10
    );
    // Past the cap even the right, fresh code is refused ...
    assert_eq!(app.resend("ann@example.com").await.status(), 202);
    let (token, code) = app.latest_secrets().await;
    assert_code_refused(&app, "ann@example.com", &code).await;
    // ... and the link still works.
    let (status, body) = app.verify_token(&token).await;
    assert_eq!((status, body), (200, json!({"status": "verified"})));
}

#[tokio::test]
async fn resends_beyond_the_daily_cap_answer_alike_and_send_nothing() {
    let app = spawn_tuned("resend_daily_cap", |s| {
        s.resend_min_interval = Duration::ZERO;
        s.max_resends_per_day = 3;
    })
    .await;
    assert_eq!(app.register(&ann()).await.status(), 201);
    for _ in 0..6 {
        let response = app.resend("ann@example.com").await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"status": "accepted"}));
    }
    assert_eq!(app.events("VerificationResentV1").await.len(), 3);
}

#[tokio::test]
async fn codes_expire_an_hour_after_issue_and_links_a_day() {
    let app = spawn_tuned("code_ttl", |_| {}).await;
    assert_eq!(app.register(&ann()).await.status(), 201);
    let registered = app.events("UserRegisteredV1").await;
    let verification = &registered[0]["data"]["verification"];
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(verification[field].as_str().unwrap()).unwrap()
    };
    let link_life = at("expires_at") - chrono::Utc::now().fixed_offset();
    let code_life = at("code_expires_at") - chrono::Utc::now().fixed_offset();
    assert!(link_life > chrono::Duration::hours(23), "{link_life}");
    assert!(
        code_life > chrono::Duration::minutes(55) && code_life <= chrono::Duration::hours(1),
        "{code_life}"
    );

    // An hour later (moved back in the database): the code is refused, the link works.
    let (token, code) = app.latest_secrets().await;
    app.db
        .execute_unprepared(
            "UPDATE verifications SET code_expires_at = now() - interval '1 second'",
        )
        .await
        .unwrap();
    assert_code_refused(&app, "ann@example.com", &code).await;
    let (status, body) = app.verify_token(&token).await;
    assert_eq!((status, body), (200, json!({"status": "verified"})));
}

#[tokio::test]
async fn stored_code_hashes_are_an_hmac_under_the_server_key() {
    let key = "an-example-server-key-of-at-least-32-bytes";
    let app = spawn_tuned("code_hmac", |s| s.code_hmac_key = Some(CodeKey::new(key))).await;
    assert_eq!(app.register(&ann()).await.status(), 201);
    let (_, code) = app.latest_secrets().await;
    let row = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            "SELECT id, code_hash FROM verifications",
        ))
        .await
        .unwrap()
        .unwrap();
    let id: uuid::Uuid = row.try_get("", "id").unwrap();
    let stored: String = row.try_get("", "code_hash").unwrap();

    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(id.as_bytes());
    mac.update(code.as_bytes());
    assert_eq!(stored, hex::encode(mac.finalize().into_bytes()));
    // A dump alone is no longer enough: the unkeyed hash of id and code is not what is stored.
    let mut unkeyed = Sha256::new();
    unkeyed.update(id.as_bytes());
    unkeyed.update(code.as_bytes());
    assert_ne!(stored, hex::encode(unkeyed.finalize()));
}

/// Status, body and header names of a response, and how long it took.
async fn answer(
    started: Instant,
    response: reqwest::Response,
) -> (u16, Vec<String>, Value, Duration) {
    let status = response.status().as_u16();
    let mut names: Vec<String> = response.headers().keys().map(ToString::to_string).collect();
    names.sort();
    let body = response.json().await.unwrap();
    (status, names, body, started.elapsed())
}

#[tokio::test]
async fn code_verification_and_resend_answer_alike_and_in_the_same_time_for_every_address_state() {
    const FLOOR: Duration = Duration::from_millis(300);
    let app = spawn_tuned("no_oracles", |s| {
        s.min_response_time = FLOOR;
        s.resend_min_interval = Duration::from_secs(3600);
    })
    .await;
    let register = |email: &str| {
        let mut body = ann();
        body["email"] = json!(email);
        body
    };
    let mut codes = std::collections::HashMap::new();
    for email in [
        "pending@x.com",
        "verified@x.com",
        "expired@x.com",
        "locked@x.com",
    ] {
        assert_eq!(app.register(&register(email)).await.status(), 201);
        codes.insert(email, app.latest_secrets().await);
    }
    let (verified_token, _) = &codes["verified@x.com"];
    assert_eq!(app.verify_token(verified_token).await.0, 200);
    app.db
        .execute_unprepared(
            "UPDATE verifications SET code_expires_at = now() - interval '1 second' \
             WHERE user_id = (SELECT id FROM users WHERE email = 'expired@x.com')",
        )
        .await
        .unwrap();
    let locked_code = &codes["locked@x.com"].1;
    for _ in 0..5 {
        app.verify_code("locked@x.com", wrong_for(locked_code))
            .await;
    }

    // The right code where there is one (expired, locked), a wrong one otherwise.
    let attempts = [
        ("nobody@x.com", "123456".to_owned()),
        (
            "verified@x.com",
            wrong_for(&codes["verified@x.com"].1).to_owned(),
        ),
        (
            "pending@x.com",
            wrong_for(&codes["pending@x.com"].1).to_owned(),
        ),
        ("expired@x.com", codes["expired@x.com"].1.clone()),
        ("locked@x.com", locked_code.clone()),
    ];
    let mut verify_answers = Vec::new();
    for (email, code) in &attempts {
        let started = Instant::now();
        let response = app
            .post_json("/user/verify", &json!({ "email": email, "code": code }))
            .await;
        verify_answers.push((email, answer(started, response).await));
    }
    let (_, (status, names, body, _)) = &verify_answers[0];
    assert_eq!(
        (*status, body["error"]["code"].as_str()),
        (400, Some("invalid_code"))
    );
    for (email, (other_status, other_names, other_body, took)) in &verify_answers {
        assert_eq!(
            (other_status, other_names, other_body),
            (status, names, body),
            "{email}"
        );
        assert!(*took >= FLOOR, "{email} answered in {took:?}");
    }

    // Resend: unknown, verified, pending (acted on), pending again (rate-limited).
    let mut resend_answers = Vec::new();
    for email in [
        "nobody@x.com",
        "verified@x.com",
        "pending@x.com",
        "pending@x.com",
    ] {
        let started = Instant::now();
        let response = app.resend(email).await;
        resend_answers.push((email, answer(started, response).await));
    }
    let (_, (status, names, body, _)) = &resend_answers[0];
    assert_eq!(*status, 202);
    for (email, (other_status, other_names, other_body, took)) in &resend_answers {
        assert_eq!(
            (other_status, other_names, other_body),
            (status, names, body),
            "{email}"
        );
        assert!(*took >= FLOOR, "{email} answered in {took:?}");
    }
    assert_eq!(app.events("VerificationResentV1").await.len(), 1);
}

#[tokio::test]
async fn guessing_a_verified_accounts_code_counts_against_the_daily_cap() {
    let app = spawn_tuned("guess_verified", |s| s.max_wrong_codes_per_day = 3).await;
    assert_eq!(app.register(&ann()).await.status(), 201);
    let (token, code) = app.latest_secrets().await;
    assert_eq!(app.verify_token(&token).await.0, 200);
    // The holder of the code learns "already verified" ...
    let (status, body) = app.verify_code("ann@example.com", &code).await;
    assert_eq!((status, body), (200, json!({"status": "already_verified"})));
    // ... but guessing it is bounded like any code: after 3 wrong guesses even the right code
    // gets the answer every other address gets.
    for _ in 0..3 {
        let (status, _) = app.verify_code("ann@example.com", wrong_for(&code)).await;
        assert_eq!(status, 400);
    }
    assert_code_refused(&app, "ann@example.com", &code).await;
}
