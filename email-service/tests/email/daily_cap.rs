//! `MAX_MAILS_PER_ADDRESS_PER_DAY`: one address gets at most the cap of mails in a day (the
//! welcome mail exempt); the rest are acked, recorded as suppressed and counted. And the
//! sign-up attempt notice, the newest event the queue is bound to.

use std::time::Duration;

use chrono::Utc;
use common::events::{Envelope, SignupAttemptedV1};
use email_service::{SendState, find_inbox_entry};
use uuid::Uuid;

use crate::helpers::*;

/// The final inbox state of each event, once every one has one.
async fn final_states(app: &TestApp, ids: &[Uuid]) -> Vec<SendState> {
    eventually(Duration::from_secs(30), "every event handled", || async {
        let mut states = Vec::new();
        for id in ids {
            match find_inbox_entry(&app.db, *id).await.unwrap() {
                Some(row) if matches!(row.state, SendState::Sent | SendState::Suppressed) => {
                    states.push(row.state);
                }
                _ => return None,
            }
        }
        Some(states)
    })
    .await
}

#[tokio::test]
async fn the_eleventh_mail_to_one_address_in_a_day_is_not_sent_but_the_welcome_mail_is() {
    // PostgreSQL: the deliveries below are decided concurrently on a pool of connections.
    let database_url = common::testing::fresh_postgres_database("email_cap")
        .await
        .unwrap();
    let app = spawn_app_with(|s| s.database_url = database_url.into()).await;
    assert_eq!(
        format!("{:?}", app.settings.max_mails_per_address_per_day),
        "10",
        "the default cap"
    );
    // Twelve verification mails to one address, back to back (handled concurrently), then the
    // exempt welcome mail, and one mail to somebody else.
    let capped: Vec<_> = (0..12)
        .map(|_| registered("capped@example.com", None))
        .collect();
    for event in &capped {
        app.publish(event).await;
    }
    let welcome = welcome("capped@example.com");
    app.publish(&welcome).await;
    let other = registered("other@example.com", None);
    app.publish(&other).await;

    let mut ids: Vec<Uuid> = capped.iter().map(|e| e.event_id).collect();
    ids.extend([welcome.event_id, other.event_id]);
    let states = final_states(&app, &ids).await;
    let suppressed = states
        .iter()
        .filter(|s| **s == SendState::Suppressed)
        .count();
    assert_eq!(suppressed, 2, "{states:?}");
    assert_eq!(states[12..], [SendState::Sent, SendState::Sent]);

    let mails = app.sink.received();
    let to_capped: Vec<_> = mails
        .iter()
        .filter(|m| m.to == ["capped@example.com"])
        .collect();
    assert_eq!(to_capped.len(), 11, "10 verification mails + the welcome");
    assert_eq!(
        to_capped
            .iter()
            .filter(|m| m.header("Subject").as_deref() == Some("Welcome!"))
            .count(),
        1
    );
    assert_eq!(mails.len(), 12);

    // A suppressed event delivered again stays unsent.
    let again = capped
        .iter()
        .zip(&states)
        .find(|(_, s)| **s == SendState::Suppressed)
        .unwrap()
        .0;
    app.publish(again).await;
    app.publish(&registered("marker@example.com", None)).await;
    app.sink
        .wait_for(13, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(
        app.sink
            .received()
            .iter()
            .filter(|m| m.to == ["capped@example.com"])
            .count(),
        11
    );

    let (_, metrics) = http_get(&format!("http://{}/metrics", app.admin)).await;
    // One series per event type, all present from start-up: their sum. The recorder is per
    // process (other tests here suppress too): at least these two.
    let value: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("email_suppressed_total{") && l.contains("daily_cap"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(value >= 2.0, "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn with_the_cap_off_every_mail_goes_out() {
    let app = spawn_app_with(|s| {
        s.max_mails_per_address_per_day = email_service::MailCap::OFF;
    })
    .await;
    for _ in 0..12 {
        app.publish(&registered("uncapped@example.com", None)).await;
    }
    app.sink
        .wait_for(12, Duration::from_secs(20))
        .await
        .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_signup_attempt_notice_is_mailed_without_a_link() {
    let app = spawn_app().await;
    let event = Envelope::new(
        Uuid::new_v4(),
        Utc::now(),
        SignupAttemptedV1 {
            user_id: Uuid::new_v4(),
            email: "owner@example.com".into(),
            attempted_at: Utc::now(),
            account_verified: true,
        },
    );
    // Published with its own routing key, `mandatory`: unroutable would fail here.
    app.publish(&event).await;
    let mail = app
        .sink
        .wait_for(1, Duration::from_secs(15))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(mail.to, ["owner@example.com"]);
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Someone tried to sign up with your address")
    );
    let attempted = event.data.attempted_at.format("%Y-%m-%d %H:%M UTC");
    assert!(
        mail.data.contains(&format!("on {attempted}")),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("nothing needs doing"));
    assert!(!mail.data.contains("http"), "no link: {}", mail.data);
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_forty_mails_to_one_address_sends_exactly_the_cap() {
    // Forty decisions for one address at once on a pool of PostgreSQL connections: without the
    // per-address serialisation some of them count before the others' admissions commit.
    let database_url = common::testing::fresh_postgres_database("email_cap_burst")
        .await
        .unwrap();
    let app = spawn_app_with(|s| s.database_url = database_url.into()).await;
    let burst: Vec<_> = (0..40)
        .map(|_| registered("burst@example.com", None))
        .collect();
    for event in &burst {
        app.publish(event).await;
    }
    let ids: Vec<Uuid> = burst.iter().map(|e| e.event_id).collect();
    let states = final_states(&app, &ids).await;
    let sent = states.iter().filter(|s| **s == SendState::Sent).count();
    assert_eq!(sent, 10, "{states:?}");
    assert_eq!(app.sink.received().len(), 10);
    app.stop().await;
}
