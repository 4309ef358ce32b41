//! Reminders through the whole pipeline, with second-scale intervals.

use std::{collections::HashMap, time::Duration};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestStack, eventually, link_in, spawn_stack_with, subject, token_of};

const REMINDER: &str = "Reminder: confirm your email address";

/// Waits until no user has a reminder scheduled any more: from then on none can be sent.
async fn wait_until_schedules_end(stack: &TestStack) {
    eventually(Duration::from_secs(30), "no reminder scheduled", || async {
        stack
            .count("SELECT COUNT(*) AS n FROM users WHERE next_reminder_at IS NOT NULL")
            .await
            == 0
    })
    .await;
}

#[tokio::test]
async fn exactly_two_reminders_arrive_each_with_a_new_link() {
    let stack = spawn_stack_with("e2e_reminders_two", |s| {
        s.user.reminder_interval = Duration::from_secs(1);
        s.user.max_reminders = 2;
    })
    .await;
    let body = json!({"email": "dan@example.com", "password": "correct horse"});
    assert_eq!(stack.register(&body).await.status(), 201);
    let mails = stack.mails(3).await;
    wait_until_schedules_end(&stack).await;
    assert_eq!(
        stack
            .count("SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'VerificationReminderV1'")
            .await,
        2
    );
    let reminders: Vec<_> = mails.iter().filter(|m| subject(m) == REMINDER).collect();
    assert_eq!(reminders.len(), 2);

    // Three different links; each reminder's was a live verification until the next one
    // replaced it, and the last one verifies.
    let tokens: Vec<String> = mails.iter().map(|m| token_of(&link_in(m))).collect();
    assert_eq!(
        tokens
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3
    );
    let superseded_not_expired = stack
        .count(
            "SELECT COUNT(*) AS n FROM verifications WHERE superseded_at IS NOT NULL \
         AND superseded_at < expires_at AND consumed_at IS NULL",
        )
        .await;
    assert_eq!(superseded_not_expired, 2);
    let last = token_of(&link_in(reminders[1]));
    let verified = stack.verify_token(&last).await;
    assert_eq!(verified.status(), 200);
}

#[tokio::test]
async fn verifying_after_the_first_reminder_stops_the_second() {
    // The whole pipeline (reminder → mail → verify) must finish within one interval; 5 s leaves
    // a slow machine room. The exact rule is tested deterministically in the user-service tests.
    let stack = spawn_stack_with("e2e_reminders_stop", |s| {
        s.user.reminder_interval = Duration::from_secs(5);
        s.user.max_reminders = 2;
    })
    .await;
    let body = json!({"email": "eve@example.com", "password": "correct horse"});
    assert_eq!(stack.register(&body).await.status(), 201);
    let first_reminder = stack.mails(2).await.remove(1);
    assert_eq!(subject(&first_reminder), REMINDER);
    let token = token_of(&link_in(&first_reminder));
    assert_eq!(stack.verify_token(&token).await.status(), 200);
    assert_eq!(subject(&stack.mails(3).await[2]), "Welcome!");
    wait_until_schedules_end(&stack).await;
    assert_eq!(
        stack
            .count("SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'VerificationReminderV1'")
            .await,
        1
    );
}

#[tokio::test]
async fn two_user_service_instances_send_each_reminder_once() {
    let stack = spawn_stack_with("e2e_reminders_instances", |s| {
        s.user.reminder_interval = Duration::from_secs(1);
        s.user.max_reminders = 2;
    })
    .await;
    // A second user-service (its own pool, its own scheduler) on the same database.
    let second = user_service::Application::build(stack.settings.user.clone())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let second_run = tokio::spawn(second.run(stop.clone()));

    let users = 5;
    for i in 0..users {
        let body = json!({"email": format!("user{i}@example.com"), "password": "correct horse"});
        assert_eq!(stack.register(&body).await.status(), 201);
    }
    let mails = stack.mails(users * 3).await;
    wait_until_schedules_end(&stack).await;
    stop.cancel();
    second_run.await.unwrap().unwrap();

    assert_eq!(
        stack
            .count("SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'VerificationReminderV1'")
            .await,
        i64::try_from(users * 2).unwrap()
    );
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for mail in mails.iter().filter(|m| subject(m) == REMINDER) {
        *per_user.entry(mail.to[0].clone()).or_default() += 1;
    }
    assert_eq!(per_user.len(), users);
    assert!(per_user.values().all(|n| *n == 2), "{per_user:?}");
}
