//! SMTP failures: 4xx retried with growing delays, 5xx dead-lettered and replayed, exhausted
//! retries, and an SMTP server that is down for a while.

use std::time::Duration;

use email_service::{ReplaySelection, SendState, SinkBehaviour, find_inbox_entry};
use sea_orm::{ConnectionTrait, Statement};

use crate::helpers::*;

#[tokio::test]
async fn smtp_4xx_is_retried_with_growing_delays_until_delivered() {
    let app = spawn_app().await;
    app.sink.fail_next(3, SinkBehaviour::TempFail);
    let event = registered("dave@example.com", None);
    app.publish(&event).await;

    app.sink.wait_for(1, Duration::from_secs(20)).await.unwrap();
    let times = app.sink.transaction_times();
    assert_eq!(times.len(), 4, "three 451s, then the accepted attempt");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    println!("gaps between attempts: {gaps:?}");
    for (gap, delay) in gaps.iter().zip(TEST_DELAYS) {
        assert!(
            *gap >= delay,
            "gap {gap:?} shorter than the retry delay {delay:?}"
        );
    }
    assert!(
        gaps[0] < gaps[1] && gaps[1] < gaps[2],
        "delays grow: {gaps:?}"
    );
    let row = eventually(Duration::from_secs(5), "a sent row", || async {
        find_inbox_entry(&app.db, event.event_id)
            .await
            .unwrap()
            .filter(|r| r.state == SendState::Sent)
    })
    .await;
    assert_eq!(row.attempts, 4);
    app.stop().await;
}

#[tokio::test]
async fn exhausted_retries_go_to_the_dead_letter_queue_with_the_attempt_count() {
    let app = spawn_app_with(|s| s.max_attempts = 3).await;
    app.sink.set_behaviour(SinkBehaviour::TempFail);
    let event = registered("erin@example.com", None);
    app.publish(&event).await;

    let dlq = app.dlq().await;
    let letters = eventually(Duration::from_secs(15), "a dead letter", || async {
        let letters = dlq.list().await.unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.message_id, Some(event.event_id.to_string()));
    assert_eq!(letter.category, "exhausted");
    assert_eq!(letter.attempts, 3, "the attempt header went 1 → 2 → 3");
    assert!(letter.reason.contains("451"), "{}", letter.reason);
    assert_eq!(app.sink.transactions(), 3);
    dlq.close().await;
    app.stop().await;
}

#[tokio::test]
async fn smtp_5xx_is_dead_lettered_and_replay_after_the_fix_delivers_it() {
    let app = spawn_app().await;
    app.sink.set_behaviour(SinkBehaviour::PermFail);
    let event = registered("nobody@example.com", Some("Nobody"));
    app.publish(&event).await;

    let dlq = app.dlq().await;
    let letters = eventually(Duration::from_secs(10), "a dead letter", || async {
        let letters = dlq.list().await.unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters[0].category, "rejected");
    assert!(letters[0].reason.contains("550"), "{}", letters[0].reason);
    assert_eq!(app.sink.transactions(), 1, "a 5xx is not retried");
    let row = find_inbox_entry(&app.db, event.event_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, SendState::Failed);
    let last_error = row.last_error.unwrap();
    assert!(last_error.contains("550"));
    // The sink quotes the recipient, as real servers do; neither record keeps it.
    for stored in [&last_error, &letters[0].reason] {
        assert!(!stored.contains("nobody@example.com"), "{stored}");
        assert!(stored.contains("<[redacted address]>"), "{stored}");
    }

    // The admin port reports the waiting letter (the DLQ's depth, sampled at each scrape).
    let metrics = format!("http://{}/metrics", app.admin);
    let dlq_depth_is = |depth: &'static str| {
        let metrics = metrics.clone();
        async move {
            let (_, body) = http_get(&metrics).await;
            body.lines()
                .any(|line| line == format!("email_dead_letter_queue_messages {depth}"))
        }
    };
    eventually(
        Duration::from_secs(10),
        "the DLQ depth 1 in /metrics",
        || dlq_depth_is("1"),
    )
    .await;

    // The operator fixes the cause, then replays.
    app.sink.set_behaviour(SinkBehaviour::Accept);
    let missing = dlq
        .replay(&ReplaySelection::Id(uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap();
    assert!(missing.is_empty());
    let replayed = dlq
        .replay(&ReplaySelection::Id(event.event_id.to_string()))
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1);
    let mails = app.sink.wait_for(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(mails[0].to, vec!["nobody@example.com".to_owned()]);
    assert!(dlq.list().await.unwrap().is_empty());
    eventually(
        Duration::from_secs(10),
        "the DLQ depth 0 in /metrics",
        || dlq_depth_is("0"),
    )
    .await;
    dlq.close().await;
    app.stop().await;
}

#[tokio::test]
async fn mails_wait_in_retry_while_smtp_is_down_and_all_arrive_after() {
    // The retry ladder alone (the circuit breaker, which would pause sending instead, is off).
    let app = spawn_app_with(|s| {
        s.max_attempts = 30;
        s.smtp_breaker_threshold = u32::MAX;
    })
    .await;
    app.sink.set_behaviour(SinkBehaviour::Down);
    let events: Vec<_> = (0..10)
        .map(|i| registered(&format!("user{i}@example.com"), None))
        .collect();
    for event in &events {
        app.publish(event).await;
    }
    // Every mail failed at least once and sits in a retry queue.
    eventually(Duration::from_secs(15), "ten failed attempts", || async {
        let row = app
            .db
            .query_one_raw(Statement::from_string(
                app.db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM inbox WHERE state = 'failed' OR attempts > 1",
            ))
            .await
            .unwrap()
            .unwrap();
        (row.try_get::<i64>("", "n").unwrap() == 10).then_some(())
    })
    .await;
    assert_eq!(app.sink.count(), 0);

    app.sink.set_behaviour(SinkBehaviour::Accept);
    let mails = app
        .sink
        .wait_for(10, Duration::from_secs(20))
        .await
        .unwrap();
    let mut ids = event_ids(&mails);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "every mail arrived exactly once");
    let dlq = app.dlq().await;
    assert!(dlq.list().await.unwrap().is_empty());
    dlq.close().await;
    app.stop().await;
}
