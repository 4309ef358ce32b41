//! Phone verification against abuse (issue 12): refused numbers, velocity limits per number,
//! prefix, client address and at registration, the failed-check cap per number, idempotent
//! registration, no enumeration through resend, and no code in the logs.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use sea_orm::ConnectionTrait as _;
use serde_json::{Value, json};
use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt};

use crate::{
    helpers::{TestApp, json_of, spawn_tuned},
    phone::{PHONE, ann_with_phone, phone_settings, status_of, wrong_for},
};

/// Every recorded send moved `by` into the past (the velocity window is one hour).
async fn age_sends(app: &TestApp, by: &str) {
    app.db
        .execute_unprepared(&format!(
            "UPDATE phone_sends SET created_at = created_at - interval '{by}'"
        ))
        .await
        .unwrap();
}

async fn assert_rate_limited(response: reqwest::Response) {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=3600).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let (status, body) = json_of(response).await;
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn invalid_premium_rate_voip_and_disallowed_country_numbers_get_422_and_nothing_is_sent() {
    let app = spawn_tuned("phone_refused", |s| {
        phone_settings(s);
        s.sms_allowed_countries = "GB,IE".parse().unwrap();
    })
    .await;
    for (phone, code) in [
        ("+44 1234", "invalid_phone"),
        ("07400 123456", "invalid_phone"),
        ("not a number", "invalid_phone"),
        ("+449098790555", "phone_type_not_allowed"),
        ("+445612345678", "phone_type_not_allowed"),
        ("+448001234567", "phone_type_not_allowed"),
        ("+33612345678", "phone_country_not_allowed"),
    ] {
        let answer = error_code(app.register(&ann_with_phone(phone)).await).await;
        assert_eq!(answer, (422, code.to_owned()), "register {phone}");
        let answer = error_code(app.phone_resend(phone).await).await;
        assert_eq!(answer, (422, code.to_owned()), "resend {phone}");
    }
    let (status, body) = app.phone_check("+44 1234", "123456").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_phone"))
    );
    let (status, body) = app.phone_check(PHONE, "12ab56").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("validation_failed"))
    );
    assert_eq!(app.count("users").await, 0);
    assert_eq!(app.count("phone_verifications").await, 0);
    assert!(app.outbox().await.is_empty());
    // Refused types and countries are recorded as blocked sends (invalid input is not).
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM phone_sends WHERE blocked_reason = 'type_not_allowed'")
            .await,
        6
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM phone_sends WHERE blocked_reason = 'country_not_allowed'")
            .await,
        2
    );
    assert_eq!(app.count("phone_sends").await, 8);
}

#[tokio::test]
async fn resend_answers_known_and_unknown_numbers_alike_and_limits_them_alike() {
    let app = spawn_tuned("phone_no_enumeration", |s| {
        phone_settings(s);
        s.phone_resend_cooldown = Duration::from_millis(1);
        s.phone_sends_per_number_per_hour = 3;
    })
    .await;
    assert_eq!(app.register(&ann_with_phone(PHONE)).await.status(), 201);
    // The known number had one send at registration; give the unknown one a request too.
    let unknown = "+447400999888";
    assert_eq!(
        app.phone_resend_from(unknown, "203.0.113.9").await.status(),
        202
    );
    let mut answers = Vec::new();
    for phone in [PHONE, unknown] {
        let mut statuses = Vec::new();
        for n in 0..3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let response = app
                .phone_resend_from(phone, &format!("203.0.113.{n}"))
                .await;
            let status = response.status().as_u16();
            let body = if status == 202 {
                response.json::<Value>().await.unwrap()
            } else {
                json!(response.headers().contains_key("retry-after"))
            };
            statuses.push((status, body));
        }
        answers.push(statuses);
    }
    assert_eq!(
        answers[0], answers[1],
        "known and unknown numbers answered alike"
    );
    assert_eq!(
        answers[0].iter().map(|a| a.0).collect::<Vec<_>>(),
        [202, 202, 429],
        "{answers:?}"
    );
    assert_eq!(
        app.sms_events().await.len(),
        3,
        "only the known number got SMS"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM phone_sends WHERE blocked_reason = 'no_verification'")
            .await,
        3
    );
}

#[tokio::test]
async fn the_prefix_limit_trips_and_recovers_after_the_window() {
    let app = spawn_tuned("phone_prefix_limit", |s| {
        phone_settings(s);
        s.phone_sends_per_prefix_per_hour = 2;
    })
    .await;
    // Same range +447400123…, different numbers and clients.
    assert_eq!(
        app.phone_resend_from("+447400123401", "203.0.113.1")
            .await
            .status(),
        202
    );
    assert_eq!(
        app.phone_resend_from("+447400123402", "203.0.113.2")
            .await
            .status(),
        202
    );
    assert_rate_limited(app.phone_resend_from("+447400123403", "203.0.113.3").await).await;
    // Registration in that range is refused too, and creates nothing.
    assert_rate_limited(app.register(&ann_with_phone("+447400123404")).await).await;
    assert_eq!(app.count("users").await, 0);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM phone_sends WHERE blocked_reason = 'velocity_prefix'")
            .await,
        2
    );
    // Another range is not affected.
    assert_eq!(
        app.phone_resend_from("+447400124401", "203.0.113.4")
            .await
            .status(),
        202
    );
    age_sends(&app, "61 minutes").await;
    assert_eq!(
        app.phone_resend_from("+447400123403", "203.0.113.3")
            .await
            .status(),
        202
    );
    assert_eq!(
        app.register(&ann_with_phone("+447400123404"))
            .await
            .status(),
        201
    );
    assert_eq!(app.sms_events().await.len(), 1);
}

#[tokio::test]
async fn the_client_address_limit_trips_and_recovers_after_the_window() {
    let app = spawn_tuned("phone_ip_limit", |s| {
        phone_settings(s);
        s.phone_sends_per_ip_per_hour = 2;
    })
    .await;
    let client = "198.51.100.77";
    assert_eq!(
        app.phone_resend_from("+447400111111", client)
            .await
            .status(),
        202
    );
    assert_eq!(
        app.phone_resend_from("+447400222222", client)
            .await
            .status(),
        202
    );
    assert_rate_limited(app.phone_resend_from("+447400333333", client).await).await;
    assert_eq!(
        app.phone_resend_from("+447400333333", "198.51.100.78")
            .await
            .status(),
        202,
        "another client is not limited"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM phone_sends WHERE blocked_reason = 'velocity_ip'")
            .await,
        1
    );
    age_sends(&app, "2 hours").await;
    assert_eq!(
        app.phone_resend_from("+447400444444", client)
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn failed_checks_are_capped_per_number_across_verifications() {
    let app = spawn_tuned("phone_failed_cap", |s| {
        phone_settings(s);
        s.phone_max_failed_checks = 4;
    })
    .await;
    assert_eq!(app.register(&ann_with_phone(PHONE)).await.status(), 201);
    let first = app.latest_phone_code().await;
    for expected in ["incorrect", "incorrect", "max_attempts_reached"] {
        assert_eq!(
            status_of(&app.phone_check(PHONE, &wrong_for(&first)).await),
            (200, expected)
        );
    }
    // The verification ended; a resend starts a new one with a new code.
    assert_eq!(app.phone_resend(PHONE).await.status(), 202);
    let second = app.latest_phone_code().await;
    assert_eq!(app.count("phone_verifications").await, 2);
    assert_eq!(
        status_of(&app.phone_check(PHONE, &wrong_for(&second)).await),
        (200, "incorrect")
    );
    // Four failed checks for the number: even the right code is not evaluated any more.
    assert_eq!(
        status_of(&app.phone_check(PHONE, &second).await),
        (200, "max_attempts_reached")
    );
    assert_eq!(
        app.scalar("SELECT SUM(attempts) FROM phone_verifications")
            .await,
        4,
        "refused unevaluated: no attempt counted"
    );
    assert!(app.events("PhoneVerifiedV1").await.is_empty());
    // After the window (verifications older than PHONE_FAILED_CHECKS_WINDOW) it works again.
    app.db
        .execute_unprepared(
            "UPDATE phone_verifications SET created_at = created_at - interval '31 days'",
        )
        .await
        .unwrap();
    assert_eq!(
        status_of(&app.phone_check(PHONE, &second).await),
        (200, "verified")
    );
}

#[tokio::test]
async fn registration_with_a_phone_is_idempotent() {
    let app = spawn_tuned("phone_idempotent", phone_settings).await;
    let body = ann_with_phone(PHONE);
    let first = app.register_with_key("key-1", &body).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = app.register_with_key("key-1", &body).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.count("phone_verifications").await, 1);
    assert_eq!(app.count("phone_sends").await, 1);
    assert_eq!(app.sms_events().await.len(), 1);
    // The same key with another phone is another request.
    let other = app
        .register_with_key("key-1", &ann_with_phone("+447400123457"))
        .await;
    assert_eq!(
        error_code(other).await,
        (422, "idempotency_key_reused".to_owned())
    );
}

/// Log lines written on this thread while the guard lives (the test runtime runs the app's
/// tasks on the test's thread).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[tokio::test]
async fn codes_and_full_numbers_never_reach_the_logs() {
    let app = spawn_tuned("phone_logs", |s| {
        phone_settings(s);
        s.phone_resend_cooldown = Duration::from_millis(1);
    })
    .await;
    let captured = Captured::default();
    // Everything, at every level: what `RUST_LOG=trace` would print.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::TRACE)
        .with(tracing_subscriber::fmt::layer().with_writer(captured.clone()));
    let guard = tracing::subscriber::set_default(subscriber);
    assert_eq!(app.register(&ann_with_phone(PHONE)).await.status(), 201);
    let code = app.latest_phone_code().await;
    for _ in 0..2 {
        let _ = app.phone_check(PHONE, &wrong_for(&code)).await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(app.phone_resend(PHONE).await.status(), 202);
    assert_eq!(
        status_of(&app.phone_check(PHONE, &code).await),
        (200, "verified")
    );
    drop(guard);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("SMS code queued"),
        "the capture works: {logs}"
    );
    assert!(logs.contains("+4474…56"), "numbers are masked: {logs}");
    for line in logs.lines() {
        assert!(!line.contains(&code), "code in a log line: {line}");
        assert!(!line.contains(PHONE), "full number in a log line: {line}");
        assert!(
            !line.contains("7400123456"),
            "full number in a log line: {line}"
        );
    }
}
