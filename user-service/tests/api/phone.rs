//! Phone verification by SMS code (issue 12): registration with a phone, checks, resends. The
//! relay does not run here, so each code is read from its outbox row. Limits and refusals are
//! in `phone_abuse`.

use std::time::Duration;

use sea_orm::ConnectionTrait as _;
use serde_json::{Value, json};

use crate::helpers::{TestApp, ann, json_of, spawn_sqlite_app, spawn_tuned};

/// A valid GB mobile number (libphonenumber refuses Ofcom's 07700 900xxx drama range).
pub(crate) const PHONE: &str = "+447400123456";

pub(crate) fn ann_with_phone(phone: &str) -> Value {
    let mut body = ann();
    body["phone"] = json!(phone);
    body
}

impl TestApp {
    /// `POST /user/phone/verify`: status and JSON body.
    pub(crate) async fn phone_check(&self, phone: &str, code: &str) -> (u16, Value) {
        let body = json!({ "phone": phone, "code": code });
        json_of(self.post_json("/user/phone/verify", &body).await).await
    }

    /// `POST /user/phone/verification/resend` from client address `client` (the apps of these
    /// tests trust `X-Forwarded-For`).
    pub(crate) async fn phone_resend_from(&self, phone: &str, client: &str) -> reqwest::Response {
        self.client
            .post(self.url("/user/phone/verification/resend"))
            .header("x-forwarded-for", client)
            .json(&json!({ "phone": phone }))
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn phone_resend(&self, phone: &str) -> reqwest::Response {
        self.phone_resend_from(phone, "198.51.100.1").await
    }

    /// The `data` of every `PhoneVerificationRequestedV1`, oldest first.
    pub(crate) async fn sms_events(&self) -> Vec<Value> {
        self.events("PhoneVerificationRequestedV1")
            .await
            .into_iter()
            .map(|payload| payload["data"].clone())
            .collect()
    }

    /// The code of the newest SMS event.
    pub(crate) async fn latest_phone_code(&self) -> String {
        let events = self.sms_events().await;
        let newest = events.last().expect("an SMS event");
        newest["code"].as_str().unwrap().to_owned()
    }
}

/// A wrong code of the same length.
pub(crate) fn wrong_for(code: &str) -> String {
    if code == "000000" { "111111" } else { "000000" }.into()
}

pub(crate) fn status_of(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["status"].as_str().unwrap_or("<none>"))
}

/// Settings of most phone tests: the client address from `X-Forwarded-For`.
pub(crate) fn phone_settings(settings: &mut user_service::Settings) {
    settings.trust_forwarded_for = true;
}

#[tokio::test]
async fn registering_with_a_phone_writes_the_user_its_phone_verification_and_both_events() {
    let app = spawn_tuned("phone_register", phone_settings).await;
    let response = app.register(&ann_with_phone("+44 7400 123456")).await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM users WHERE phone = '+447400123456' AND phone_verified_at IS NULL"
        )
        .await,
        1
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM phone_verifications WHERE status = 'pending' AND sends = 1 AND attempts = 0")
            .await,
        1
    );
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM phone_sends WHERE blocked_reason IS NULL AND send_number = 1"
        )
        .await,
        1
    );
    let types: Vec<String> = app.outbox().await.into_iter().map(|row| row.0).collect();
    assert_eq!(types, ["UserRegisteredV1", "PhoneVerificationRequestedV1"]);
    let sms = &app.sms_events().await[0];
    assert_eq!(sms["phone"], PHONE);
    assert_eq!(sms["send_number"], 1);
    let code = sms["code"].as_str().unwrap();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    let expires_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(sms["expires_at"].clone()).unwrap();
    let ttl = expires_at - chrono::Utc::now();
    assert!(
        ttl > chrono::Duration::minutes(9) && ttl <= chrono::Duration::minutes(10),
        "{ttl}"
    );
    // Nothing stored gives the code: only a nonce, no hash.
    let nonce_rows = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM phone_verifications WHERE nonce LIKE '%{code}%'"
        ))
        .await;
    assert_eq!(nonce_rows, 0);

    // One transaction: a registration that fails (email taken) leaves no phone trace at all.
    let mut again = ann_with_phone("+447400123457");
    again["password"] = json!("another password here");
    assert_eq!(app.register(&again).await.status(), 409);
    assert_eq!(app.count("phone_verifications").await, 1);
    assert_eq!(app.count("phone_sends").await, 1);
    assert_eq!(app.sms_events().await.len(), 1);
}

#[tokio::test]
async fn the_right_code_verifies_the_phone_once_and_writes_phone_verified() {
    let app = spawn_tuned("phone_right_code", phone_settings).await;
    assert_eq!(app.register(&ann_with_phone(PHONE)).await.status(), 201);
    let code = app.latest_phone_code().await;
    assert_eq!(
        status_of(&app.phone_check(PHONE, &code).await),
        (200, "verified")
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM users WHERE phone_verified_at IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM phone_verifications WHERE status = 'verified'")
            .await,
        1
    );
    let verified = app.events("PhoneVerifiedV1").await;
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0]["data"]["phone"], PHONE);
    // Single use: checking again changes nothing.
    assert_eq!(
        status_of(&app.phone_check(PHONE, &code).await),
        (200, "already_verified")
    );
    assert_eq!(app.events("PhoneVerifiedV1").await.len(), 1);
    // A verified number gets no more SMS; the answer is the usual 202.
    assert_eq!(app.phone_resend(PHONE).await.status(), 202);
    assert_eq!(app.sms_events().await.len(), 1);
    let metrics = app.admin_metrics().await;
    for name in [
        "phone_sms_sends_total",
        "phone_verifications_verified_total",
        "phone_checks_total{result=\"verified\"}",
        "phone_sms_blocked_total{reason=\"velocity_ip\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn twenty_concurrent_wrong_guesses_count_exactly_the_maximum_then_the_code_is_dead() {
    let app = spawn_tuned("phone_concurrent_guesses", phone_settings).await;
    assert_eq!(app.register(&ann_with_phone(PHONE)).await.status(), 201);
    let code = app.latest_phone_code().await;
    let wrong = wrong_for(&code);
    let answers = futures::future::join_all((0..20).map(|_| app.phone_check(PHONE, &wrong))).await;
    let incorrect = answers
        .iter()
        .filter(|answer| status_of(answer) == (200, "incorrect"))
        .count();
    let ended = answers
        .iter()
        .filter(|answer| status_of(answer) == (200, "max_attempts_reached"))
        .count();
    // Two wrong codes with attempts left, the last counted one and every later one ended.
    assert_eq!((incorrect, ended), (2, 18), "{answers:?}");
    assert_eq!(
        app.scalar("SELECT CAST(attempts AS BIGINT) FROM phone_verifications")
            .await,
        3,
        "exactly PHONE_CODE_MAX_ATTEMPTS counted"
    );
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM phone_verifications WHERE status = 'max_attempts_reached'"
        )
        .await,
        1
    );
    assert_eq!(
        status_of(&app.phone_check(PHONE, &code).await),
        (200, "max_attempts_reached"),
        "the right code after the last attempt is refused"
    );
    assert_eq!(
        app.scalar("SELECT CAST(attempts AS BIGINT) FROM phone_verifications")
            .await,
        3
    );
    assert!(app.events("PhoneVerifiedV1").await.is_empty());
}

#[tokio::test]
async fn an_expired_code_answers_expired_without_using_an_attempt() {
    let app = spawn_tuned("phone_expired", phone_settings).await;
    assert_eq!(app.register(&ann_with_phone(PHONE)).await.status(), 201);
    let code = app.latest_phone_code().await;
    app.db
        .execute_unprepared(
            "UPDATE phone_verifications SET expires_at = now() - interval '1 second'",
        )
        .await
        .unwrap();
    assert_eq!(
        status_of(&app.phone_check(PHONE, &code).await),
        (200, "expired")
    );
    assert_eq!(
        status_of(&app.phone_check(PHONE, "123456").await),
        (200, "expired")
    );
    assert_eq!(
        app.scalar("SELECT CAST(attempts AS BIGINT) FROM phone_verifications")
            .await,
        0
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM phone_verifications WHERE status = 'expired'")
            .await,
        1
    );
    // A resend after expiry starts a new verification with a new code, which works.
    assert_eq!(app.phone_resend(PHONE).await.status(), 202);
    let events = app.sms_events().await;
    assert_eq!(events.len(), 2);
    assert_ne!(events[0]["verification_id"], events[1]["verification_id"]);
    assert_eq!(events[1]["send_number"], 1);
    let new_code = app.latest_phone_code().await;
    assert_eq!(
        status_of(&app.phone_check(PHONE, &new_code).await),
        (200, "verified")
    );
}

#[tokio::test]
async fn a_resend_sends_the_same_code_again_and_keeps_the_attempts() {
    let app = spawn_tuned("phone_resend_same", |s| {
        phone_settings(s);
        s.phone_resend_cooldown = Duration::from_millis(1);
    })
    .await;
    assert_eq!(app.register(&ann_with_phone(PHONE)).await.status(), 201);
    let code = app.latest_phone_code().await;
    assert_eq!(
        status_of(&app.phone_check(PHONE, &wrong_for(&code)).await),
        (200, "incorrect")
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let response = app.phone_resend(PHONE).await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "accepted"})
    );
    let events = app.sms_events().await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["code"], code.as_str(), "the same code");
    assert_eq!(events[1]["verification_id"], events[0]["verification_id"]);
    assert_eq!(events[1]["send_number"], 2);
    assert_eq!(events[1]["expires_at"], events[0]["expires_at"]);
    assert_eq!(
        app.scalar("SELECT CAST(attempts AS BIGINT) FROM phone_verifications")
            .await,
        1
    );
    assert_eq!(
        status_of(&app.phone_check(PHONE, &code).await),
        (200, "verified")
    );
}

#[tokio::test]
async fn resends_stop_at_the_send_limit_and_wait_for_the_cooldown() {
    let app = spawn_tuned("phone_send_limits", |s| {
        phone_settings(s);
        s.phone_max_sends = 3;
    })
    .await;
    assert_eq!(app.register(&ann_with_phone(PHONE)).await.status(), 201);
    // Within the cooldown (30 s): accepted, nothing sent.
    assert_eq!(app.phone_resend(PHONE).await.status(), 202);
    assert_eq!(app.sms_events().await.len(), 1);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM phone_sends WHERE blocked_reason = 'cooldown'")
            .await,
        1
    );
    let cool_down =
        "UPDATE phone_verifications SET last_sent_at = last_sent_at - interval '31 seconds'";
    for sent in [2, 3] {
        app.db.execute_unprepared(cool_down).await.unwrap();
        assert_eq!(app.phone_resend(PHONE).await.status(), 202);
        assert_eq!(app.sms_events().await.len(), sent);
    }
    app.db.execute_unprepared(cool_down).await.unwrap();
    assert_eq!(app.phone_resend(PHONE).await.status(), 202);
    assert_eq!(app.sms_events().await.len(), 3, "PHONE_MAX_SENDS");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM phone_sends WHERE blocked_reason = 'max_sends'")
            .await,
        1
    );
}

#[tokio::test]
async fn sqlite_registers_sends_and_verifies_a_phone_too() {
    let app = spawn_sqlite_app().await;
    assert_eq!(app.register(&ann_with_phone(PHONE)).await.status(), 201);
    let code = app.latest_phone_code().await;
    assert_eq!(
        status_of(&app.phone_check(PHONE, &wrong_for(&code)).await),
        (200, "incorrect")
    );
    assert_eq!(app.phone_resend(PHONE).await.status(), 202);
    assert_eq!(
        status_of(&app.phone_check(PHONE, &code).await),
        (200, "verified")
    );
    assert_eq!(app.events("PhoneVerifiedV1").await.len(), 1);
    // The account's email is still unverified: the sweep deletes it with its phone rows.
    let later = chrono::Utc::now() + chrono::Duration::days(8);
    let week = Duration::from_secs(7 * 24 * 3600);
    let deleted = user_service::delete_expired_pending_accounts(&app.db, week, later, 7)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(app.count("phone_verifications").await, 0, "cascade");
}

#[tokio::test]
async fn a_canceled_row_with_a_later_creation_time_does_not_hide_the_live_verification() {
    // Two starts racing for the send lock: the one that read its clock first commits last,
    // cancelling the other, whose `created_at` is later.
    let app = spawn_tuned("phone_newest_live", phone_settings).await;
    assert_eq!(app.register(&ann_with_phone(PHONE)).await.status(), 201);
    let code = app.latest_phone_code().await;
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO phone_verifications (id, user_id, phone, nonce, code_length, status, \
             attempts, sends, last_sent_at, created_at, expires_at, verified_at) \
             SELECT '{}', user_id, phone, nonce, code_length, 'canceled', attempts, sends, \
             last_sent_at, created_at + interval '1 second', expires_at, verified_at \
             FROM phone_verifications",
            uuid::Uuid::now_v7()
        ))
        .await
        .unwrap();
    assert_eq!(
        status_of(&app.phone_check(PHONE, &code).await),
        (200, "verified")
    );
}
