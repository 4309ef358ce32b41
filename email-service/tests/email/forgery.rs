//! Forged content: events published straight to the exchange with a link outside
//! `PUBLIC_BASE_URL` or a code of another shape are dead-lettered, counted and never mailed.

use std::time::Duration;

use email_service::find_inbox_entry;

use crate::helpers::*;

#[tokio::test]
async fn a_forged_link_or_code_is_dead_lettered_and_never_mailed() {
    let app = spawn_app().await;
    let mut foreign = registered("victim@example.com", None);
    foreign.data.verification.link = "https://evil.test/user/verify?token=phish".into();
    let mut lookalike = registered("victim2@example.com", None);
    // PUBLIC_BASE_URL is http://127.0.0.1:8080: a prefix match without the `/` would pass this.
    lookalike.data.verification.link = "http://127.0.0.1:8080.evil.test/user/verify".into();
    let mut bad_code = registered("victim3@example.com", None);
    bad_code.data.verification.code = "Call +1 555 0100".into();
    let genuine = registered("ann@example.com", None);
    for event in [&foreign, &lookalike, &bad_code, &genuine] {
        app.publish(event).await;
    }
    // A welcome mail has no link or code, but its greeting prints the name.
    let mut spam_welcome = welcome("victim4@example.com");
    spam_welcome.data.first_name = Some("Win big at casino.evil.test".into());
    app.publish(&spam_welcome).await;

    let dlq = app.dlq().await;
    let letters = eventually(Duration::from_secs(15), "four dead letters", || async {
        let letters = dlq.list().await.unwrap();
        (letters.len() >= 4).then_some(letters)
    })
    .await;
    let mut ids: Vec<String> = letters
        .iter()
        .filter_map(|l| l.message_id.clone())
        .collect();
    ids.sort();
    let mut forged = [&foreign, &lookalike, &bad_code]
        .map(|e| e.event_id.to_string())
        .to_vec();
    forged.push(spam_welcome.event_id.to_string());
    forged.sort();
    assert_eq!(ids, forged);
    for letter in &letters {
        assert_eq!(letter.category, "forged");
        assert!(!letter.reason.contains("evil.test"), "{}", letter.reason);
        assert!(!letter.reason.contains("555"), "{}", letter.reason);
    }

    let mails = app.sink.wait_for(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(mails[0].to, ["ann@example.com"]);
    assert_eq!(app.sink.transactions(), 1, "nothing else reached SMTP");
    for event in [&foreign, &lookalike, &bad_code] {
        assert!(
            find_inbox_entry(&app.db, event.event_id)
                .await
                .unwrap()
                .is_none(),
            "a refused event leaves no inbox row"
        );
    }
    let (_, metrics) = http_get(&format!("http://{}/metrics", app.admin)).await;
    assert!(
        metrics.contains("email_refused_content_total{field=\"link\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("email_refused_content_total{field=\"code\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("email_refused_content_total{field=\"name\"} 1"),
        "{metrics}"
    );
    dlq.close().await;
    app.stop().await;
}
