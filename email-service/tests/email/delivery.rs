//! The happy path, duplicates and poison messages.

use std::time::Duration;

use email_service::{ReplaySelection, SendState, find_inbox_entry};
use lapin::options::QueueDeclareOptions;

use crate::helpers::*;

#[tokio::test]
async fn an_event_produces_one_correct_mail() {
    let app = spawn_app().await;
    let event = registered("ann@example.com", Some("Ann"));
    app.publish(&event).await;

    let mails = app.sink.wait_for(1, Duration::from_secs(15)).await.unwrap();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.to, vec!["ann@example.com".to_owned()]);
    assert_eq!(mail.from, "no-reply@localhost");
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Confirm your email address")
    );
    assert_eq!(mail.header("To").as_deref(), Some("Ann <ann@example.com>"));
    assert_eq!(
        mail.header("Message-ID"),
        Some(format!("<{}@localhost>", event.event_id))
    );
    assert!(mail.header("Date").is_some());
    assert!(mail.data.contains("Content-Type: text/plain"));
    assert!(mail.data.contains("Content-Type: text/html"));
    assert!(mail.data.contains("Hello Ann,"));
    assert!(mail.data.contains(&event.data.verification.link));
    assert!(mail.data.contains(&event.data.verification.code));

    let row = eventually(
        Duration::from_secs(5),
        "the inbox row to be sent",
        || async {
            find_inbox_entry(&app.db, event.event_id)
                .await
                .unwrap()
                .filter(|row| row.state == SendState::Sent)
        },
    )
    .await;
    assert_eq!(row.attempts, 1);

    let base = format!("http://{}", app.admin);
    assert_eq!(http_get(&format!("{base}/health/ready")).await.0, 200);
    assert_eq!(http_get(&format!("{base}/health/live")).await.0, 200);
    let (_, metrics) = http_get(&format!("{base}/metrics")).await;
    assert!(metrics.contains("email_sent_total"), "{metrics}");
    assert!(metrics.contains("email_send_duration_seconds"));
    app.stop().await;
}

#[tokio::test]
async fn the_same_event_delivered_twice_sends_one_mail_on_postgres() {
    let database_url = common::testing::fresh_postgres_database("email_dup")
        .await
        .unwrap();
    let app = spawn_app_with(|s| s.database_url = database_url.into()).await;
    let event = registered("bob@example.com", None);
    // Back to back: the copies are handled concurrently.
    for _ in 0..5 {
        app.publish(&event).await;
    }
    app.sink.wait_for(1, Duration::from_secs(15)).await.unwrap();
    // After the send was recorded: the inbox recognises it.
    app.publish(&event).await;
    let marker = registered("marker@example.com", None);
    app.publish(&marker).await;
    app.sink.wait_for(2, Duration::from_secs(15)).await.unwrap();
    wait_until_queue_is_drained(&app).await;

    let mails = app.sink.received();
    let ids = event_ids(&mails);
    assert_eq!(mails.len(), 2, "{ids:?}");
    assert!(ids.contains(&event.event_id.to_string()));
    let row = find_inbox_entry(&app.db, event.event_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.state, row.attempts), (SendState::Sent, 1));
    app.stop().await;
}

#[tokio::test]
async fn malformed_and_unknown_events_are_dead_lettered_at_once_and_the_next_goes_out() {
    let app = spawn_app().await;
    app.publish_raw(b"{not json", "UserRegisteredV1").await;
    let mut unknown = serde_json::to_value(registered("x@example.com", None)).unwrap();
    unknown["event_type"] = "UserDeletedV1".into();
    app.publish_raw(&serde_json::to_vec(&unknown).unwrap(), "UserDeletedV1")
        .await;
    let good = registered("carol@example.com", Some("Carol"));
    app.publish(&good).await;

    let mails = app.sink.wait_for(1, Duration::from_secs(15)).await.unwrap();
    assert_eq!(mails[0].to, vec!["carol@example.com".to_owned()]);
    let dlq = app.dlq().await;
    let letters = eventually(Duration::from_secs(10), "two dead letters", || async {
        let letters = dlq.list().await.unwrap();
        (letters.len() == 2).then_some(letters)
    })
    .await;
    let mut categories: Vec<&str> = letters.iter().map(|l| l.category.as_str()).collect();
    categories.sort_unstable();
    assert_eq!(categories, ["malformed", "unknown_type"]);
    assert!(
        letters
            .iter()
            .all(|l| l.attempts == 1 && !l.reason.is_empty())
    );
    assert_eq!(
        app.sink.transactions(),
        1,
        "poison messages never reach SMTP"
    );
    // Listing leaves the queue as it was.
    assert_eq!(dlq.list().await.unwrap().len(), 2);
    let printed = email_service::format_dead_letters(dlq.queue(), &letters);
    println!("{printed}");
    assert!(printed.starts_with(&format!("{}: 2 dead letter(s)", dlq.queue())));

    // Replaying a poison message dead-letters it again; purge removes everything.
    assert_eq!(dlq.replay(&ReplaySelection::All).await.unwrap().len(), 2);
    eventually(
        Duration::from_secs(10),
        "the replayed letters back",
        || async { (dlq.list().await.unwrap().len() == 2).then_some(()) },
    )
    .await;
    assert_eq!(dlq.purge().await.unwrap(), 2);
    assert!(dlq.list().await.unwrap().is_empty());
    dlq.close().await;
    app.stop().await;
}

/// Waits until the work queue has no ready message left and the consumer acked everything
/// (`message_count` counts ready messages; the consumer count stays 1).
async fn wait_until_queue_is_drained(app: &TestApp) {
    let (connection, channel) = publisher(&app.settings).await;
    eventually(Duration::from_secs(10), "an empty work queue", || async {
        let queue = channel
            .queue_declare(
                app.topology.email_queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
        (queue.message_count() == 0).then_some(())
    })
    .await;
    let _ = connection.close(200, "done".into()).await;
}
